"""The real daemon with tokens: exposure refusal, --insecure, and tokens kept out of its log."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from tests.functional.daemon import Daemon, free_port
from tests.functional.test_daemon import migrated_sqlite

SCRIPT = Path(sys.executable).parent / "servicegroup"
AGENT, ADMIN, READ, BAD = "agent-log-5e1", "admin-log-a20", "read-log-c77", "bad-log-f03"

pytestmark = pytest.mark.skipif(
    not SCRIPT.exists(), reason=f"console script not installed next to {sys.executable}"
)


def daemon(tmp_path: Path, host: str, *serve_args: str, api: str = "") -> Daemon:
    port = free_port()
    config = tmp_path / "sg.conf"
    config.write_text(
        f"[database]\nconnection = {migrated_sqlite(tmp_path / 'sg.sqlite')}\n"
        f"[api]\nhost = {host}\nport = {port}\n{api}"
    )
    argv = [str(SCRIPT), "--config-file", str(config), *serve_args]
    return Daemon(config, port, tmp_path / "daemon.log", argv=argv).start()


def test_open_api_on_all_interfaces_is_refused_in_one_line(tmp_path: Path) -> None:
    proc = daemon(tmp_path, "0.0.0.0", "serve")
    try:
        assert proc.wait_exit() == 1
    finally:
        proc.stop()
    lines = proc.log().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("servicegroup: error: refusing to listen on 0.0.0.0")
    assert "--insecure" in lines[0]


def test_insecure_starts_anyway_and_warns(tmp_path: Path) -> None:
    proc = daemon(tmp_path, "0.0.0.0", "serve", "--insecure")
    try:
        proc.wait_ready()
        response = httpx.post(f"{proc.url}/v1/services", json={"host": "h", "binary": "b"})
        assert response.status_code == 201
    finally:
        proc.stop()
    assert "WARNING" in proc.log() and "--insecure" in proc.log()


def test_tokens_without_tls_on_all_interfaces_are_refused_in_one_line(tmp_path: Path) -> None:
    tokens = tmp_path / "agents"
    tokens.write_text(f"# agents\n{AGENT}\n")
    proc = daemon(tmp_path, "0.0.0.0", "serve", api=f"agent_token_files = {tokens}\n")
    try:
        assert proc.wait_exit() == 1
    finally:
        proc.stop()
    lines = proc.log().strip().splitlines()
    assert len(lines) == 1, lines
    assert "with [api] tokens but no TLS" in lines[0] and "--insecure" in lines[0]
    assert AGENT not in lines[0]


def test_tokens_without_tls_start_with_insecure_and_warn(tmp_path: Path) -> None:
    # (With TLS they start without a word: test_daemon_tls.py.)
    tokens = tmp_path / "agents"
    tokens.write_text(f"# agents\n{AGENT}\n")
    api = f"agent_token_files = {tokens}\n"
    proc = daemon(tmp_path, "0.0.0.0", "serve", "--insecure", api=api)
    try:
        proc.wait_ready()
        body = {"host": "h", "binary": "b"}
        assert httpx.post(f"{proc.url}/v1/services", json=body).status_code == 401
        auth = {"Authorization": f"Bearer {AGENT}"}
        assert httpx.post(f"{proc.url}/v1/services", json=body, headers=auth).status_code == 201
    finally:
        proc.stop()
    warnings = [line for line in proc.log().splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "no TLS" in warnings[0], warnings


def test_tokens_never_reach_the_daemon_log_even_with_debug(tmp_path: Path) -> None:
    api = f"agent_tokens = {AGENT}\nadmin_tokens = {ADMIN}\nread_tokens = {READ}\n"
    proc = daemon(tmp_path, "127.0.0.1", "--debug", "serve", api=api)
    try:
        proc.wait_ready()
        with httpx.Client(base_url=proc.url, timeout=10.0) as http:
            for token in (AGENT, ADMIN, READ, BAD):
                headers = {"Authorization": f"Bearer {token}"}
                http.post("/v1/services", json={"host": "h", "binary": "b"}, headers=headers)
                http.get("/v1/services", headers=headers)
                http.patch(f"/v1/services/{'0' * 32}", json={"version": -1}, headers=headers)
                http.get("/metrics", headers=headers)
    finally:
        proc.stop()
    log = proc.log()
    assert "DEBUG" in log  # the strictest logging there is was on
    for token in (AGENT, ADMIN, READ, BAD):
        assert token not in log
