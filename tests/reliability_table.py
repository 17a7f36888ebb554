"""The table of ``docs/reliability.md``: what was tried, and what happened.

The hostile-input and command-line rows are *observed*: each case of
``tests/hostile.py`` is run and its outcome written down. The other rows name the
test that checks them, and :func:`check` verifies that each such test exists.
``tests/test_reliability.py::test_reliability_doc_is_current`` fails when the page
is out of date; regenerate it with::

    PYTHONPATH=. python tests/reliability_table.py --write
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import re
import sys
import warnings

HERE = pathlib.Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "reliability.md"
BEGIN = "<!-- BEGIN GENERATED: tests/reliability_table.py -->"
END = "<!-- END GENERATED -->"

#: (what was tried, the outcome, the test that checks it: file::function).
BEHAVIOURS: list[tuple[str, str, str]] = [
    (
        "identity network, eta too large: a mini-batch cost becomes inf (sgd, momentum, adam)",
        "`DivergenceError` (a `FloatingPointError`) naming the epoch, the mini-batch and "
        "eta; parameters, optimiser state and step restored bit for bit to the start of "
        "the epoch",
        "test_reliability.py::test_divergence_epoch_restores_start_of_epoch",
    ),
    (
        "the same with `divergence_check='batch'`",
        "restored to the state just before the failing mini-batch (equal to a replay of "
        "exactly the earlier mini-batches)",
        "test_reliability.py::test_divergence_batch_restores_before_failing_batch",
    ),
    (
        "an update overflows weights to inf while the mini-batch's cost is finite "
        "(sigmoid output, eta=1.7e308)",
        "caught by the parameter scan: `DivergenceError` with reason 'parameters', "
        "parameters restored",
        "test_reliability.py::"
        "test_divergence_in_the_parameters_is_caught_although_the_cost_stays_finite",
    ),
    (
        "`on_divergence='warn'`",
        "`DivergenceWarning`; the history so far is returned with a 'diverged' entry; "
        "the network trains on normally afterwards",
        "test_reliability.py::test_divergence_warn_returns_history",
    ),
    (
        "divergence in the middle of a compiled run of mini-batches",
        "the run is replayed from its snapshot one mini-batch at a time; the exact "
        "mini-batch and reason are reported",
        "test_reliability.py::test_guard_pinpoints_the_failing_batch_inside_a_call",
    ),
    (
        "NaN / +inf / -inf at the first, middle or last parameter",
        "seen by the compiled finite-scan (float32 and float64)",
        "test_reliability.py::test_all_finite_sees_nan_and_inf_anywhere",
    ),
    (
        "KeyboardInterrupt raised by the epoch callback",
        "re-raised; network equals one trained for the completed epochs; "
        "`exc.history['interrupted']` is True",
        "test_reliability.py::test_interrupt_from_callback_keeps_completed_epochs",
    ),
    (
        "KeyboardInterrupt between compiled calls after 1, 7 and 41 mini-batches (sgd, adam)",
        "network (parameters, optimiser state, step) equals one trained on exactly the "
        "completed mini-batches; `interrupted_at` gives epoch and mini-batch",
        "test_reliability.py::test_interrupt_between_compiled_calls",
    ),
    (
        "a real SIGINT (Ctrl-C) delivered while `fit` runs",
        "stops at a mini-batch boundary, equal to a replay of the completed mini-batches",
        "test_reliability.py::test_real_sigint_during_fit_stops_at_a_batch_boundary",
    ),
    (
        "a refused `fit` call (bad validation data, bad callback)",
        "refused before anything changes: parameters, optimiser state and random stream untouched",
        "test_reliability.py::test_refused_fit_leaves_network_untouched",
    ),
    (
        "same seed, same thread count, same strategy, twice (float32/64, sgd/adam)",
        "bit-for-bit identical parameters",
        "test_reliability.py::test_fit_is_bitwise_reproducible_for_fixed_seed_and_threads",
    ),
    (
        "1 vs 2 Numba threads x serial/parallel/auto x batch 10/200",
        "agree within conftest's RTOL/ATOL x 10 (float64 1e-8, float32 1e-3); observed "
        "bit-for-bit identical for this network, whose plan is the same at 1 and 2 threads",
        "test_reliability.py::test_fit_agrees_across_thread_counts_and_strategies",
    ),
    (
        "one fit whose compiled calls alternate between 2 threads and 1 (what "
        "threads='auto' may do), four drivers, shuffled or not",
        "bit-for-bit the parameters and optimiser state of the same fit at a fixed 2 threads",
        "test_threads.py::test_alternating_thread_counts_give_the_same_bits",
    ),
    (
        "Ctrl-C in the middle of epoch 3 of a run checkpointed every 2 epochs",
        "the checkpoint of epoch 2 is intact; `fit(resume=...)` in a new network finishes "
        "with the same history and a bit-identical state as an uninterrupted run",
        "test_reliability.py::test_interrupt_mid_epoch_with_checkpoint_resumes_exactly",
    ),
    (
        "Ctrl-C while a checkpoint is being written",
        "the previous checkpoint is intact, no temporary file is left, resume is exact",
        "test_reliability.py::test_interrupt_during_checkpoint_write_keeps_the_previous_one",
    ),
    (
        "model file whose .npy header claims 10^12 parameters, a 10^12-row optimiser state "
        "or 10^12 bytes of metadata",
        "`ModelFileError` (a `ValueError`) before any array is read; peak memory < 16 MiB "
        "(before the fix: `MemoryError` from NumPy's allocation)",
        "test_reliability.py::"
        "test_model_file_header_claiming_huge_arrays_is_refused_without_allocating",
    ),
    (
        "a .npy file (not .npz) with a header claiming 10^12 items passed to `load`",
        "refused from its magic bytes, without reading it",
        "test_reliability.py::test_npy_file_with_huge_header_is_refused_without_reading",
    ),
    (
        "model-file fuzz: a valid checkpoint with 1-4 random bit flips, byte writes, "
        "deletions, insertions and a random truncation",
        "`ModelFileError` or a consistent, usable network; found and fixed: "
        "`NotImplementedError`/`RuntimeError`/`zlib.error` escaping from a damaged zip header",
        "test_properties.py::test_model_file_fuzz_bytes",
    ),
    (
        "model-file fuzz: valid archive, metadata with a key deleted or set to random JSON "
        "(huge integers, lists, dicts, text), and mangled parameter arrays",
        "`ModelFileError` or a consistent, usable network; found and fixed: `KeyError` "
        "escaping for a missing key, partial restore into a network on a bad checkpoint",
        "test_properties.py::test_model_file_fuzz_metadata",
    ),
    (
        "model files truncated, with corrupted bytes, of another format version, "
        "inconsistent with their metadata, or holding pickled objects",
        "`ModelFileError` naming the file and the problem; pickles are never loaded",
        "test_persistence.py::test_truncated_files_are_rejected",
    ),
    (
        "a crash in the middle of `save`",
        "the previous file is kept (written to a temporary file, fsynced, renamed)",
        "test_persistence.py::test_crash_mid_save_keeps_the_previous_file",
    ),
    (
        "`nbbackprop train` when training diverges",
        "one line `Error: training diverged ... eta ...`, exit status 1 (not a usage error)",
        "test_reliability.py::test_cli_divergence_is_one_line_and_status_1",
    ),
    (
        "IDX files: truncated, wrong magic, unknown type code, zero or absurd dimensions, "
        "trailing bytes",
        "`ValueError` naming the file and the problem; nothing allocated for the claimed size",
        "test_datasets.py::test_read_idx_rejects_hostile_files",
    ),
    (
        "IDX header claiming ~10^13 bytes",
        "refused before allocating",
        "test_datasets.py::test_read_idx_huge_header_does_not_allocate",
    ),
    (
        "IDX fuzz: mutated valid files (bit flips, cuts, appended bytes), plain and gzip",
        "every one either reads back consistently or raises `ValueError`",
        "test_datasets.py::test_read_idx_fuzz",
    ),
    (
        "random architectures, batch sizes, dtypes, activations, costs and data",
        "backprop equals the NumPy reference and float64 central differences",
        "test_properties.py::test_backprop_matches_reference",
    ),
    (
        "random malformed arrays (shape, dtype, NaN/inf, layout) for every entry point",
        "refused with the expected exception type naming the argument, or accepted with "
        "the same result as a clean copy",
        "test_properties.py::test_malformed_inputs_are_refused_or_equivalent",
    ),
]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    sys.path.insert(0, str(HERE))
    import hostile

    lines = [
        BEGIN,
        "",
        "### Hostile arguments (observed by running `tests/hostile.py`)",
        "",
        "| entry point | input | observed outcome | test |",
        "|---|---|---|---|",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in hostile.CASES:
            description, _, _ = hostile.outcome(case)
            lines.append(
                f"| `{case.entry}` | {_cell(case.what)} | {_cell(description)} | "
                f"`test_hostile_input[{case.id}]` |"
            )
    lines += [
        "",
        "### Command line (observed)",
        "",
        "| arguments | exit status | output | test |",
        "|---|---|---|---|",
    ]
    for cid, args, what in hostile.CLI_CASES:
        code, output, exc = hostile.cli_outcome(args)
        shown = output.strip() if exc is None else f"traceback: {exc!r}"
        lines.append(
            f"| {_cell(what)} | {code} | {_cell(shown)} | "
            f"`test_cli_bad_input_is_one_line_and_status_2[{cid}]` |"
        )
    lines += [
        "",
        "### Faults, interruptions, corrupt files, determinism",
        "",
        "| tried | outcome | test |",
        "|---|---|---|",
    ]
    for what, result, test in BEHAVIOURS:
        lines.append(f"| {_cell(what)} | {_cell(result)} | `tests/{test}` |")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def _skeleton(text: str) -> list[list[str]]:
    """The rows of the generated tables, less the wording of messages.

    Messages that come from NumPy, Click or scikit-learn may be worded differently by
    another version of them, so the check compares exception types and exit statuses,
    the inputs tried and the tests named, not the exact wording (``--write`` records
    the wording seen on this machine).
    """
    rows, columns = [], []
    for line in text.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if "test" in cells and cells[-1] == "test":
            columns = cells
            rows.append(cells)
            continue
        row = []
        for name, cell in zip(columns, cells, strict=True):
            if name == "observed outcome":
                cell = cell.split(":")[0]
            elif name == "output":
                continue
            row.append(cell)
        rows.append(row)
    return rows


def _test_functions(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def check() -> list[str]:
    """The problems that make ``docs/reliability.md`` out of date (empty if none)."""
    problems = []
    for _, _, test in BEHAVIOURS:
        file, func = test.split("::")
        path = HERE / file
        if not path.exists() or func not in _test_functions(path):
            problems.append(f"docs/reliability.md names {test}, which does not exist")
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    if BEGIN not in text or END not in text:
        problems.append(f"{DOC} lacks the generated-table markers")
    else:
        current = text[text.index(BEGIN) : text.index(END) + len(END)] + "\n"
        if _skeleton(current) != _skeleton(render()):
            problems.append(
                "docs/reliability.md's table is out of date: run "
                "`PYTHONPATH=. python tests/reliability_table.py --write` and review the diff"
            )
    return problems


def write() -> None:
    text = DOC.read_text(encoding="utf-8")
    start, stop = text.index(BEGIN), text.index(END) + len(END) + 1
    DOC.write_text(text[:start] + render() + text[stop:], encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description="Regenerate or check docs/reliability.md.")
    parser.add_argument("--write", action="store_true", help="rewrite the generated table")
    args = parser.parse_args()
    if args.write:
        write()
    problems = check()
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
