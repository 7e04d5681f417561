"""server/token_rotation.py and file_watch.py: when token files are read again, and what a
reload may change.

poll() is driven by hand here: the trigger is a SIGHUP counted by hangup(),
or a file whose stat changed. Real files, no daemon.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from oslo_config import cfg

from servicegroup import ServiceGroup
from servicegroup.conf import make_conf
from servicegroup.server import file_watch
from servicegroup.server.app import create_app
from servicegroup.server.auth import Guard, Level, Tokens
from servicegroup.server.fast_routes import FastRoutes
from servicegroup.server.file_watch import FileWatcher
from servicegroup.server.token_rotation import TokenReloader
from tests.live import serve_in_thread

OLD, NEW, ADMIN, READ = "agent-old-7a1", "agent-new-93c", "admin-2f4", "read-5d0"


def replace(path: Path, text: str) -> None:
    """Write `text` into `path` as an operator should: a new file moved over the old one."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def setup(tmp_path: Path, agents: str = f"{OLD}\n", **files: str) -> tuple[cfg.ConfigOpts, Guard]:
    """A conf whose agent (and any other kind's) tokens are files, and a Guard built from it."""
    paths = {"agent": agents, **files}
    options = {}
    for kind, text in paths.items():
        path = tmp_path / kind
        path.write_text(text)
        options[f"api__{kind}_token_files"] = [str(path)]
    conf = make_conf(**options)
    return conf, Guard(Tokens.from_conf(conf))


def watch(
    conf: cfg.ConfigOpts,
    guard: Guard,
    load: Callable[[cfg.ConfigOpts], Tokens] = Tokens.from_conf,
    look: Callable[[str], file_watch.Stamp] = file_watch.stamp,
) -> FileWatcher:
    """The daemon's watcher over the token files alone."""
    return FileWatcher([TokenReloader(conf, guard, load=load)], look=look)


def counting_load(loads: list[Tokens]) -> Callable[[cfg.ConfigOpts], Tokens]:
    def load(conf: cfg.ConfigOpts) -> Tokens:
        tokens = Tokens.from_conf(conf)
        loads.append(tokens)
        return tokens

    return load


def test_the_first_look_reads_the_files_then_only_a_change_does(tmp_path: Path) -> None:
    conf, guard = setup(tmp_path)
    loads: list[Tokens] = []
    reloader = watch(conf, guard, load=counting_load(loads))
    assert reloader.poll() is False  # read, but the same tokens: nothing swapped
    assert len(loads) == 1
    for _ in range(3):
        assert reloader.poll() is False
    assert len(loads) == 1  # unchanged files are not read again


def test_a_file_moved_into_place_swaps_the_tokens(tmp_path: Path) -> None:
    conf, guard = setup(tmp_path)
    reloader = watch(conf, guard)
    reloader.poll()
    before = guard.tokens
    replace(tmp_path / "agent", f"{NEW}\n")
    assert reloader.poll() is True
    assert guard.tokens is not before  # a whole new set, one reference swapped
    assert guard.tokens.level_of(NEW) is Level.AGENT
    assert guard.tokens.level_of(OLD) is None
    assert before.level_of(OLD) is Level.AGENT  # the old set itself was never touched


def test_a_file_written_in_place_is_seen_too(tmp_path: Path) -> None:
    conf, guard = setup(tmp_path)
    reloader = watch(conf, guard)
    reloader.poll()
    (tmp_path / "agent").write_text(f"{OLD}\n{NEW}\n")  # same inode, new size and mtime
    assert reloader.poll() is True
    assert guard.tokens.agent == (OLD.encode(), NEW.encode())


def test_sighup_reads_every_file_even_when_no_stat_changed(tmp_path: Path) -> None:
    conf, guard = setup(tmp_path)
    loads: list[Tokens] = []
    # A look that sees nothing change: only the SIGHUP can trigger this reload.
    reloader = watch(conf, guard, load=counting_load(loads), look=lambda _path: (1, 1, 1, 1))
    reloader.poll()
    (tmp_path / "agent").write_text(f"{NEW}\n")
    assert reloader.poll() is False and len(loads) == 1
    reloader.hangup()
    reloader.hangup()  # two before a look: one reload
    assert reloader.poll() is True
    assert len(loads) == 2
    assert guard.tokens.level_of(NEW) is Level.AGENT
    assert reloader.poll() is False and len(loads) == 2


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.unlink(), id="removed"),
        pytest.param(lambda path: path.write_bytes(b"\xff\xfe not utf-8\n"), id="not-utf8"),
        pytest.param(lambda path: path.write_text("# emptied\n"), id="emptied"),
    ],
)
def test_a_reload_that_fails_keeps_the_old_tokens_and_names_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None]
) -> None:
    conf, guard = setup(tmp_path, agents=f"{OLD}\n", admin=f"{ADMIN}\n")
    reloader = watch(conf, guard)
    reloader.poll()
    before = guard.tokens
    caplog.set_level(logging.DEBUG)
    damage(tmp_path / "agent")
    replace(tmp_path / "admin", "admin-would-change\n")  # all or nothing: this waits too
    assert reloader.poll() is False
    assert guard.tokens is before
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(tmp_path / "agent") in errors[0].getMessage()
    assert "the tokens loaded before stay" in errors[0].getMessage()
    for token in (OLD, ADMIN, "admin-would-change"):
        assert token not in caplog.text


def test_a_refused_reload_is_not_retried_until_a_change_or_sighup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf, guard = setup(tmp_path)
    loads: list[Tokens] = []
    reloader = watch(conf, guard, load=counting_load(loads))
    reloader.poll()
    (tmp_path / "agent").write_text("")  # caught empty, mid-write
    reloader.poll()
    errors = len([r for r in caplog.records if r.levelno == logging.ERROR])
    for _ in range(3):
        reloader.poll()  # one error in the log, not one a second
    assert len(loads) == 2
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == errors == 1
    (tmp_path / "agent").write_text(f"{NEW}\n")  # the writer finishes
    assert reloader.poll() is True
    assert guard.tokens.level_of(NEW) is Level.AGENT


def test_removing_every_read_token_is_refused_because_reads_would_open(tmp_path: Path) -> None:
    conf, guard = setup(tmp_path, read=f"{READ}\n")
    reloader = watch(conf, guard)
    reloader.poll()
    replace(tmp_path / "read", "\n")
    assert reloader.poll() is False
    assert guard.tokens.checks(Level.READ)  # reads still need a token
    assert guard.tokens.level_of(READ) is Level.READ


def test_tokens_for_a_kind_started_without_any_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf, guard = setup(tmp_path, read="# no read token: reads are open\n")
    reloader = watch(conf, guard)
    reloader.poll()
    replace(tmp_path / "read", f"{READ}\n")
    assert reloader.poll() is False
    assert guard.tokens.read == ()
    assert "read tokens to a daemon started with none" in caplog.text
    assert READ not in caplog.text


def test_inline_tokens_alone_give_nothing_to_watch(tmp_path: Path) -> None:
    conf = make_conf(api__agent_tokens=[OLD])
    reloader = watch(conf, Guard(Tokens.from_conf(conf)))
    assert not reloader.watching
    with reloader.running(0.01):
        pass  # no thread to start or stop


def test_the_watcher_thread_swaps_a_rotated_file_in(tmp_path: Path) -> None:
    conf, guard = setup(tmp_path)
    reloader = watch(conf, guard)
    with reloader.running(0.01):
        replace(tmp_path / "agent", f"{OLD}\n{NEW}\n")
        deadline = time.monotonic() + 10
        while guard.tokens.level_of(NEW) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert guard.tokens.level_of(NEW) is Level.AGENT
    assert not [t for t in threading.enumerate() if t.name == "servicegroup-file-watch"]


def test_sighup_wakes_the_watcher_at_once_whatever_the_interval(tmp_path: Path) -> None:
    conf, guard = setup(tmp_path)
    reloader = watch(conf, guard)
    with reloader.running(3600.0):
        (tmp_path / "agent").write_text(f"{NEW}\n")
        reloader.hangup()  # what the SIGHUP handler calls
        deadline = time.monotonic() + 10
        while guard.tokens.level_of(NEW) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert guard.tokens.level_of(NEW) is Level.AGENT
    # ...and a stop does not wait out the hour either: running() has returned.


def test_the_watcher_survives_a_look_that_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf, guard = setup(tmp_path)
    looks: list[str] = []

    def flaky(path: str) -> file_watch.Stamp:
        looks.append(path)
        if len(looks) == 1:
            raise RuntimeError("a bug in a look")
        return file_watch.stamp(path)

    reloader = watch(conf, guard, look=flaky)
    with reloader.running(0.01):
        replace(tmp_path / "agent", f"{NEW}\n")
        deadline = time.monotonic() + 10
        while guard.tokens.level_of(NEW) is None and time.monotonic() < deadline:
            time.sleep(0.01)
    assert guard.tokens.level_of(NEW) is Level.AGENT
    assert "the look failed" in caplog.text


def test_sighup_is_counted_not_fatal_and_the_old_handler_comes_back(tmp_path: Path) -> None:
    conf, guard = setup(tmp_path)
    reloader = watch(conf, guard)
    before = signal.getsignal(signal.SIGHUP)
    with reloader.on_sighup():
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 10
        while reloader.hangups == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reloader.hangups == 1
    assert signal.getsignal(signal.SIGHUP) == before


def test_sighup_while_starting_is_ignored() -> None:
    with file_watch.sighup_ignored():
        os.kill(os.getpid(), signal.SIGHUP)  # the default action would end pytest
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN


def test_a_swap_is_seen_whole_by_concurrent_checks(tmp_path: Path) -> None:
    """Readers racing many swaps only ever see the old set or the new one, never a mix."""
    _, guard = setup(tmp_path, agents=f"{OLD}\n")
    sets = [Tokens(agent=(OLD.encode(),)), Tokens(agent=(NEW.encode(),))]
    mixed: list[tuple[Level | None, Level | None]] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            tokens = guard.tokens  # what a request reads, once
            seen = (tokens.level_of(OLD), tokens.level_of(NEW))
            if seen not in ((Level.AGENT, None), (None, Level.AGENT)):
                mixed.append(seen)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i in range(20_000):
        guard.tokens = sets[i % 2]
    stop.set()
    for thread in threads:
        thread.join()
    assert mixed == []


def test_a_swap_reaches_every_route_fast_and_fastapi(
    sqlite_url: str, make_group: Callable[..., ServiceGroup]
) -> None:
    """The routes in front of FastAPI and FastAPI's own all check the swapped-in set."""
    group = make_group(
        sqlite_url, api__agent_tokens=[OLD], api__admin_tokens=[ADMIN], api__read_tokens=[READ]
    )
    app = create_app(group)
    assert isinstance(app, FastRoutes)
    sid = group.register("compute-1", "nova-compute").uuid
    app.guard.tokens = Tokens(read=(b"read-new",), agent=(NEW.encode(),), admin=(b"admin-new",))
    body = {"host": "compute-2", "binary": "nova-compute"}
    requests = [
        ("POST", f"/v1/services/{sid}/heartbeat", {}, 204),  # fast route
        ("POST", "/v1/services", {"json": body}, 201),  # fast route
        # FastAPI's twin: past the token, then refused for its content type.
        ("POST", "/v1/services", {"json": body, "headers": {"content-type": "text/x"}}, 422),
        ("GET", "/v1/services", {}, 200),  # FastAPI, read level
        ("GET", "/metrics", {}, 200),
        ("PATCH", f"/v1/services/{sid}", {"json": {"disabled": True}}, 200),  # admin level
    ]
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        for method, path, kwargs, ok in requests:
            old = {"authorization": f"Bearer {ADMIN}", **kwargs.pop("headers", {})}
            new = {**old, "authorization": "Bearer admin-new"}
            assert http.request(method, path, headers=old, **kwargs).status_code == 401, path
            answer = http.request(method, path, headers=new, **kwargs).status_code
            assert answer == ok, (method, path, answer)
