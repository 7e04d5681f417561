"""The daemon's heartbeat tail under each value of one sweeper option, side by side.

    python bench/sweeper.py --driver db-postgresql --driver zookeeper --rounds 2
    python bench/sweeper.py --vary sweep_budget=0.05,0.01 --driver db-mysql
    python bench/sweeper.py --quick --driver db-sqlite     # seconds; the test suite's

For each driver: N services registered once (90% beating, as in run.py), then
one daemon per value of the `[events]` option named by --vary (default
sweep_slice=1000,0: slices of 1,000 against one read of the whole fleet),
ALTERNATED for --rounds rounds (1000, 0, 1000, 0 ...). Each daemon gets
run.py's warm-up (one beat per id, then the fleet's first sweep), then the
paced wrk window of run.py: PACED_RATE beats/s offered over 50 connections.
Reported per daemon: the achieved rate, p50/p90/p99, and its sweeper's last
sweep from /metrics. A sweep of 10,000 services lands in every such window.
On PostgreSQL and MySQL each round ends with the same paced writes sent to
the database without a daemon (paced_sql.py), as `raw`: the floor.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # bench/run.py, the harness this extends

from servicegroup import conf as sg_conf

EVENTS_OPTIONS = {opt.name: opt for opt in sg_conf.events_opts}


def sweep_seconds(url: str) -> float | None:
    text = httpx.get(f"{url}/metrics", timeout=60).raise_for_status().text
    found = re.search(r"^servicegroup_sweep_duration_seconds (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def compare(
    target: bench.Target, n: int, option: str, values: list[str], rounds: int, seconds: float
) -> dict:
    runs: dict[str, list[dict[str, Any]]] = {value: [] for value in values}
    with target.env.database(target.dialect) as url:
        work = bench.Workload(target, n, url)
        try:
            ids = [s.uuid for s in work.services][: bench.TOOZ_BEATERS.get(target.name)]
            ids_file = target.env.tmp / f"ids-{target.tag}.txt"
            ids_file.write_text("\n".join(ids) + "\n")
            timing = {
                "report_interval": bench.BENCH_DOWN_TIME / 10,
                "service_down_time": bench.BENCH_DOWN_TIME,
            }
            for _ in range(rounds):
                for value in values:
                    varied = {f"events__{option}": value}
                    with bench.daemon(target, url, **timing, **varied) as proc:
                        bench.beat_each(proc.url, ids)
                        bench.settle(proc.url, work.binary)
                        paced = bench.run_wrk(proc.url, ids_file, seconds, 50, bench.PACED_RATE)
                        paced["last_sweep_s"] = sweep_seconds(proc.url)
                    runs[value].append(paced)
                if target.dialect in bench.PACED_RAW_DIALECTS:
                    runs.setdefault("raw", []).append(bench.run_paced_sql(url, ids_file, seconds))
        finally:
            work.close()
            target.cleanup()
    return {
        "services": n,
        "option": option,
        "offered_per_s": bench.PACED_RATE,
        "wrk_seconds": seconds,
        "runs": runs,
        "median_p99_ms": {
            value: statistics.median(r["p99_ms"] for r in rs) for value, rs in runs.items()
        },
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{'driver':<16}{'value':>6}  {'paced/s':>8}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}"
        f"{'sweep s':>9}"
    ]
    for name, result in report["targets"].items():
        if "error" in result:
            lines.append(f"{name:<16}  {result['error']}")
            continue
        for value, runs in result["runs"].items():
            for r in runs:
                sweep = "-" if r.get("last_sweep_s") is None else f"{r['last_sweep_s']:.2f}"
                lines.append(
                    f"{name:<16}{value:>6}  {r['per_s']:>8.0f}{r['p50_ms']:>8.1f}"
                    f"{r['p90_ms']:>8.1f}{r['p99_ms']:>8.1f}{sweep:>9}"
                )
        medians = ", ".join(f"{v}: {p:.1f}" for v, p in result["median_p99_ms"].items())
        lines.append(f"{name:<16}median p99 ms by {result['option']}: {medians}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--driver", action="append", help=f"one of {', '.join(bench.DRIVERS)}")
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument(
        "--vary",
        default="sweep_slice=1000,0",
        help="an [events] option and its values, alternated: OPTION=V1,V2[,...]",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="paced wrk window")
    parser.add_argument("--quick", action="store_true", help="200 services, 1 s, one round")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    names = [n for spec in args.driver or ["db-sqlite"] for n in spec.split(",")]
    unknown = [n for n in names if n not in bench.DRIVERS]
    if unknown:
        parser.error(f"unknown driver(s): {', '.join(unknown)}")
    option, _, listed = args.vary.partition("=")
    values = [v for v in listed.split(",") if v]
    if option not in EVENTS_OPTIONS or len(values) < 2:
        parser.error(
            f"--vary: OPTION=V1,V2 with OPTION one of {', '.join(EVENTS_OPTIONS)}, "
            f"not {args.vary!r}"
        )
    for value in values:
        try:
            EVENTS_OPTIONS[option].type(value)
        except ValueError as exc:
            parser.error(f"--vary: {option}={value}: {exc}")
    if bench.WRK is None:
        parser.error("wrk is not installed (Debian package wrk)")
    n, rounds, seconds = args.services, args.rounds, args.seconds
    if args.quick:
        n, rounds, seconds = 200, 1, 1.0
    report: dict[str, Any] = {"machine": bench.machine(), "targets": {}}

    def measure(target: bench.Target) -> dict[str, Any]:
        target.check()
        return compare(target, n, option, values, rounds, seconds)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report["targets"], failed = bench.measure_targets(names, measure, log)
    bench.finish(report, table, args.json)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
