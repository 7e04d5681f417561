"""What TLS costs the daemon: per new connection, and per heartbeat on a kept-alive one.

    python bench/tls.py --driver memcached --services 10000 --rounds 3 --seconds 10
    python bench/tls.py --quick        # seconds: the script works, no figure worth keeping

Three daemons share one fleet (run.Workload: N services in a fresh database,
90% of them beating), all running at once and measured in turn, alternated
round after round (plain, tls, mtls, plain, tls, mtls ...) so the machine's
noise falls on each alike:

- plain: HTTP;
- tls: HTTPS (`[api] ssl_certfile`, `ssl_keyfile`; an EC P-256 certificate
  from a throwaway CA, tests/certs.py);
- mtls: HTTPS with `ssl_client_cert = required` (the client shows a
  certificate signed by the CA).

Windows, each with the daemon's CPU (utime + stime from /proc) over it:

1. keep-alive: heartbeat.lua under wrk -c50, every connection kept open:
   beats/s, p50/p99, daemon CPU per beat. (wrk shows no client
   certificate, so mtls is not in this window.)
2. new connection per beat: the same with `Connection: close`; the daemon
   closes each connection after its answer and wrk opens another, so every
   beat pays a TCP connect and, over TLS, a handshake. Whether wrk resumes
   a TLS session is wrk's business; window 3 says what each kind costs.
3. one client, one connection after another (Python ssl, sequential): TCP
   connect, handshake, one heartbeat, close; the wall time of each, median
   and p90, for a full handshake and, over TLS, for a resumed one (the
   session ticket of the previous connection). Client and daemon share the
   machine's cores, so this is latency as a client on the same host sees it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # bench/run.py: Env, Target, Workload, wrk_command, parse_wrk

from tests.certs import Pki
from tests.functional.daemon import Daemon, free_port

VARIANTS = ("plain", "tls", "mtls")
CONNECTIONS = 50
TIMING = {"report_interval": bench.BENCH_DOWN_TIME / 10, "service_down_time": bench.BENCH_DOWN_TIME}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tls_options(variant: str, pki: Pki) -> dict[str, Any]:
    if variant == "plain":
        return {}
    options = {"api__ssl_certfile": str(pki.server.cert), "api__ssl_keyfile": str(pki.server.key)}
    if variant == "mtls":
        options |= {"api__ssl_ca_file": str(pki.ca), "api__ssl_client_cert": "required"}
    return options


def client_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(pki.client.cert, pki.client.key)
    return context


@contextlib.contextmanager
def daemons(target: bench.Target, url: str, pki: Pki, work: Path) -> Iterator[dict[str, Daemon]]:
    with contextlib.ExitStack() as stack:
        started: dict[str, Daemon] = {}
        for variant in VARIANTS:
            port = free_port()
            conf = work / f"{variant}.conf"
            options = {**target.options(**TIMING), **tls_options(variant, pki)}
            conf.write_text(bench.config_text(url, port, options))
            verify = None if variant == "plain" else client_context(pki)
            started[variant] = Daemon(conf, port, work / f"{variant}.log", verify=verify).start()
        for proc in started.values():
            stack.enter_context(bench.running(proc))
        yield started


def wrk_window(proc: Daemon, ids: Path, seconds: float, new_connections: bool) -> dict[str, Any]:
    argv, env = bench.wrk_command(proc.url, ids, seconds, CONNECTIONS)
    if new_connections:
        argv[1:1] = ["-H", "Connection: close"]
    assert proc.proc is not None
    cpu = cpu_seconds(proc.proc.pid)
    out = subprocess.run(
        argv, env=env, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    result = bench.parse_wrk(out)
    cpu = cpu_seconds(proc.proc.pid) - cpu
    result["daemon_cpu_s"] = round(cpu, 2)
    result["cpu_us_per_beat"] = round(cpu / max(result["requests"], 1) * 1e6, 1)
    return result


def one_by_one(
    proc: Daemon, ids: list[str], count: int, context: ssl.SSLContext | None, resume: bool
) -> dict[str, Any]:
    """`count` connections in turn, each: connect, handshake, one heartbeat, close."""
    port = int(proc.url.rsplit(":", 1)[1])
    assert proc.proc is not None
    cpu = cpu_seconds(proc.proc.pid)
    session: ssl.SSLSession | None = None
    times: list[float] = []
    for i in range(count):
        request = (
            f"POST /v1/services/{ids[i % len(ids)]}/heartbeat HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ).encode()
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn: socket.socket = raw
            if context is not None:
                conn = context.wrap_socket(raw, server_hostname="127.0.0.1", session=session)
            conn.sendall(request)
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
            if context is not None and resume:
                session = conn.session  # type: ignore[attr-defined]
        times.append(time.perf_counter() - start)
        assert answer.startswith(b"HTTP/1.1 204"), answer[:80]
    cpu = cpu_seconds(proc.proc.pid) - cpu
    ordered = sorted(times)
    return {
        "count": count,
        "cpu_us_per_conn": round(cpu / count * 1e6, 1),
        "median_ms": round(statistics.median(times) * 1e3, 3),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)] * 1e3, 3),
        "per_s": round(count / sum(times), 1),
    }


def measure(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    env = bench.Env()
    try:
        target = bench.Target(args.driver, env)
        target.check()
        pki = Pki.create(env.tmp / "pki")
        with env.database(target.dialect) as url:
            work = bench.Workload(target, args.services, url)
            try:
                ids = [s.uuid for s in work.beating]
                ids_file = env.tmp / "ids.txt"
                ids_file.write_text("\n".join(ids) + "\n")
                with daemons(target, url, pki, env.tmp) as procs:
                    return run_rounds(args, procs, ids, ids_file, pki, log)
            finally:
                work.close()
    finally:
        target.cleanup()
        env.close()


def run_rounds(
    args: argparse.Namespace,
    procs: dict[str, Daemon],
    ids: list[str],
    ids_file: Path,
    pki: Pki,
    log: Callable[[str], None],
) -> dict[str, Any]:
    trust = ssl.create_default_context(cafile=str(pki.ca))
    contexts = {"plain": None, "tls": trust, "mtls": client_context(pki)}
    rounds: list[dict[str, Any]] = []
    for number in range(args.rounds):
        found: dict[str, Any] = {}
        for variant in VARIANTS:
            proc = procs[variant]
            if variant != "mtls":
                for name, close in (("keepalive", False), ("new_conn", True)):
                    found[f"{variant}_{name}"] = wrk_window(proc, ids_file, args.seconds, close)
            found[f"{variant}_sequential"] = one_by_one(
                proc, ids, args.sequential, contexts[variant], resume=False
            )
            if variant != "plain":
                found[f"{variant}_sequential_resumed"] = one_by_one(
                    proc, ids, args.sequential, contexts[variant], resume=True
                )
        log(f"round {number + 1}: {json.dumps(found)}")
        rounds.append(found)
    return {"rounds": rounds, "machine": bench.machine(), "args": vars(args)}


def table(report: dict[str, Any]) -> str:
    rounds = report["rounds"]

    def med(key: str, field: str) -> float:
        return statistics.median(r[key][field] for r in rounds)

    lines = [
        "| window | plain | tls | tls / plain |",
        "|---|---|---|---|",
    ]
    for window, label in (("keepalive", "keep-alive"), ("new_conn", "new connection per beat")):
        for field, unit in (
            ("per_s", "beats/s"),
            ("p99_ms", "p99 ms"),
            ("cpu_us_per_beat", "daemon CPU us/beat"),
        ):
            plain, tls = med(f"plain_{window}", field), med(f"tls_{window}", field)
            lines.append(f"| {label}, {unit} | {plain:,.1f} | {tls:,.1f} | {tls / plain:.2f} |")
    lines += [
        "",
        "| one connection after another | median ms | p90 ms | per s | daemon CPU us/conn |",
        "|---|---|---|---|---|",
    ]
    for key in (
        "plain_sequential",
        "tls_sequential",
        "tls_sequential_resumed",
        "mtls_sequential",
        "mtls_sequential_resumed",
    ):
        lines.append(
            f"| {key} | {med(key, 'median_ms'):.2f} | {med(key, 'p90_ms'):.2f} | "
            f"{med(key, 'per_s'):,.0f} | {med(key, 'cpu_us_per_conn'):,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--driver", default="memcached", choices=bench.DRIVERS)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sequential", type=int, default=500, help="connections in window 3")
    parser.add_argument("--quick", action="store_true", help="300 services, 1 round of 1 s")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.services, args.rounds, args.seconds, args.sequential = 300, 1, 1.0, 20
    report = measure(args, lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
