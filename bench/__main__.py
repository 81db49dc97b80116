"""``python -m bench [--quick] [--only KEY …] [--json PATH]``: every benchmark figure, one table.

Timings are medians over several runs, compared with a floor (a minimal MCPServer with one no-op
tool) measured in the same run over the same stdio transport and client.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import (
    db,
    fig_apply,
    fig_claims,
    fig_import,
    fig_live,
    fig_memory,
    fig_record,
    fig_startup,
    fig_status,
    fig_summary,
    fig_throughput,
    fig_wal,
)
from bench.config import FULL, QUICK, Sizes
from bench.harness import RESULTS, Figure, set_work_dir
from bench.report import summary, table, write_json

# Figure groups in the order they run; each returns one or more rows of the table.
GROUPS: dict[str, Callable[[Sizes], list[Figure]]] = {
    "cold_start": fig_startup.run,
    "record": fig_record.run,
    "throughput_sqlite": fig_throughput.run_sqlite,
    "read_during_apply": fig_apply.run,
    "read_during_import": fig_import.run,
    "wal_bound": fig_wal.run,
    "claims": lambda s: [fig_claims.run(s)],
    "live": fig_live.run,
    "throughput_postgres": lambda s: [fig_throughput.run_postgres(s)],
    "cost_summary": lambda s: [fig_summary.run(s)],
    "pipeline_status": lambda s: [fig_status.run(s)],
    "rss": lambda s: [fig_memory.run(s)],
}
# Every key the JSON holds after a complete run (tests/test_bench.py checks them).
FIGURE_KEYS = (
    "cold_start",
    "cold_start_first",
    "record_p50",
    "record_p99",
    "record_wide",
    "record_lock_hold",
    "throughput_sqlite",
    "throughput_apart",
    "read_during_apply_sqlite",
    "read_during_apply_postgres",
    "read_during_import_sqlite",
    "read_during_import_postgres",
    "wal_bound",
    "claim_record",
    "live_sqlite",
    "live_postgresql",
    "throughput_postgres",
    "cost_summary",
    "pipeline_status",
    "rss",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repetitions (a smoke run)")
    parser.add_argument("--only", nargs="+", choices=sorted(GROUPS), help="run only these figure groups")
    parser.add_argument(
        "--json", type=Path, help="where to write the raw numbers (default bench/results/latest.json, quick.json)"
    )
    parser.add_argument("--work", type=Path, help="scratch directory (default bench/results/work)")
    args = parser.parse_args(argv)
    if args.work is not None:
        set_work_dir(args.work)
    sizes = QUICK if args.quick else FULL
    mode = "quick" if args.quick else "full"
    # A smoke run never overwrites the numbers of the last full run.
    json_path: Path = args.json or RESULTS / ("quick.json" if args.quick else "latest.json")
    # The machine may be shared: the load average before and after tells a noisy run from a clean one.
    load = {"start": os.getloadavg()}
    begun = time.perf_counter()
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    db.clean_work()
    db.template()  # migrated once here, outside any event loop; every SQLite figure copies it
    try:
        for name, group in GROUPS.items():
            if args.only and name not in args.only:
                continue
            started = time.perf_counter()
            print(f"[bench] {name} …", file=sys.stderr, flush=True)
            try:
                figures.extend(group(sizes))
            except Exception as exc:  # noqa: BLE001 - one broken figure must not hide the others
                errors[name] = "".join(traceback.format_exception(exc))
                print(f"[bench] {name} FAILED: {exc!r}", file=sys.stderr, flush=True)
            print(f"[bench] {name} done in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    finally:
        db.clean_work()
    elapsed = time.perf_counter() - begun
    load["end"] = os.getloadavg()
    write_json(json_path, figures, mode=mode, seconds=elapsed, errors=errors, load=load)
    print(table(figures))
    if text := summary(figures):
        print("\n" + text)
    print(f"\n{mode} run in {elapsed:.0f}s; load average {load['start'][0]:.2f} → {load['end'][0]:.2f}")
    print(f"raw numbers in {json_path}")
    for name, text in errors.items():
        print(f"\nERROR in {name}:\n{text}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
