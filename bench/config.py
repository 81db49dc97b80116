"""Sizes of the full run and of the quick smoke run (``--quick``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    cold_runs: int  # cold starts per server (ours and floor, interleaved)
    migrate_runs: int  # first starts on a fresh file (with migration)
    record_runs: int  # servers started for the per-call latency figure
    record_calls: int  # timed calls per run (after the warm-up)
    warmup_calls: int
    wide_steps: int  # steps of the large catalogue (record_execution there vs on 10 steps)
    single_calls: int  # record_execution calls of the one-process throughput run
    procs: int  # server processes of the multi-process throughput run
    calls_per_proc: int
    metric_rows: int  # llm_metrics rows under get_cost_summary
    summary_calls: int
    status_large: tuple[int, int]  # (processes, executions)
    status_small: tuple[int, int]
    status_calls: int
    rss_marks: tuple[int, int]  # RSS read after this many calls, and after this many
    apply_steps: int  # steps of the apply_pipeline that reads run alongside
    apply_rounds: int  # applies per database (reads are pooled over them)
    wal_writers: int  # short-lived writer processes of the WAL figure
    wal_commits: int  # commits per writer
    wal_parallel: int  # writers running at a time
    claim_steps: int  # independent steps the claim → record workers (procs of them) share
    live_samples: int  # records through server B, each timed to the event on server A's listener
    import_executions: int  # record_execution calls that fill the database the import's bundle is exported from
    import_output_kb: int  # size of each of their outputs (the bundle is about executions × this)
    import_rounds: int  # imports into the same live database (the bundle under new ids each time)


FULL = Sizes(
    cold_runs=7,
    migrate_runs=5,
    record_runs=3,
    record_calls=400,
    warmup_calls=30,
    wide_steps=2_000,
    single_calls=500,
    procs=8,
    calls_per_proc=250,
    metric_rows=1_000_000,
    summary_calls=7,
    status_large=(100, 100_000),
    status_small=(10, 100),
    status_calls=15,
    rss_marks=(1_000, 10_000),
    apply_steps=2_000,
    apply_rounds=3,
    wal_writers=20,
    wal_commits=150,
    wal_parallel=4,
    claim_steps=400,
    live_samples=40,
    import_executions=1_000,
    import_output_kb=50,
    import_rounds=3,
)

QUICK = Sizes(
    cold_runs=1,
    migrate_runs=1,
    record_runs=1,
    record_calls=30,
    warmup_calls=5,
    wide_steps=200,
    single_calls=24,
    procs=2,
    calls_per_proc=8,
    metric_rows=5_000,
    summary_calls=2,
    status_large=(20, 1_000),
    status_small=(5, 20),
    status_calls=2,
    rss_marks=(20, 60),
    apply_steps=200,
    apply_rounds=1,
    wal_writers=2,
    wal_commits=10,
    wal_parallel=2,
    claim_steps=12,
    live_samples=3,
    import_executions=20,
    import_output_kb=20,
    import_rounds=1,
)
