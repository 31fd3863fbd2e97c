"""Who can reach the dashboard and change things (issue 28): this machine by default; over a network only with
the token, and then only the actions that need it.

The listening sockets are read from ``/proc/net/tcp*``: no traffic goes to any address but loopback (a server
started for sharing is still only visited at 127.0.0.1). The pages run through AppTest (in this process, where
``server.address`` is set as ``streamlit run`` would set it) and through the real server in Chromium.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import (
    CHROMIUM,
    TINY,
    inet_sockets,
    new_tab,
    proc_address,
    processes_of,
    settle,
    sockets_of,
    texts,
    wait_for,
)
from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

from cifarnet.config import make_config
from cifarnet.runs.experiments import experiment_runs, load_experiment, pending, start_experiment
from cifarnet.runs.folders import create_run, list_runs, process_alive, read_run, request_stop, trainer_pid
from cifarnet.runs.queue import cancel_run
from cifarnet.runs.records import QUEUE_LOCK_FILE
from cifarnet.runs.slots import max_live_runs, take_slot, try_lock
from cifarnet.runs.status import LIVE
from cifarnet.ui import access
from cifarnet.ui.app import PAGES
from harness import dashboard_server

TOKEN = "a-long-random-token-0123456789"  # what `secrets.token_urlsafe` gives, in spirit
# every control that changes something, as its button reads (icons are ligature text, so match the words)
CONTROL = re.compile(
    r"Launch run|Compare norms|Vary a setting|Launch experiment|Stop run|Resume run|Cancel \S|"
    r"\bDelete\b|Download CIFAR-10"
)
SHARED = [
    "--server.address",
    "0.0.0.0",
    "--browser.serverAddress",
    "127.0.0.1",
]  # else a headless server looks up its public address online
browser_only = pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at /usr/bin/chromium")


# ---- sockets, as the kernel lists them -------------------------------------------------------------------------


def listening(port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The local addresses a TCP socket listens on at ``port`` (state 0A is LISTEN)."""
    return {
        address
        for table, address, bound, state in inet_sockets().values()
        if table.startswith("tcp") and bound == port and state == "0A"
    }


def test_proc_addresses_are_read_in_network_order():
    assert proc_address("0100007F:1F90") == (ipaddress.ip_address("127.0.0.1"), 8080)
    assert proc_address("00000000000000000000000001000000:0050") == (ipaddress.ip_address("::1"), 80)


# ---- the rule ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, loopback",
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        (None, False),
        ("", False),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("my-laptop.local", False),
        ("unix:///tmp/dashboard.sock", False),
    ],
)
def test_only_loopback_addresses_keep_the_dashboard_private(address, loopback):
    assert access.is_loopback(address) is loopback


def test_dashboard_started_as_readme_says_listens_on_loopback_only(tmp_path):
    """`streamlit run dashboard.py` (port and headless aside) reads .streamlit/config.toml: loopback only, and it
    prints a local address, no network one."""
    log = tmp_path / "server.log"
    with dashboard_server(tmp_path / "runs", None, log) as url:
        bound = listening(urlparse(url).port)
        printed = log.read_text()
    assert bound and all(address.is_loopback for address in bound), bound
    assert "URL: http://localhost:" in printed and "Network URL" not in printed, printed


# ---- a runs folder with something to launch, stop, resume, cancel and delete -------------------------------------


@dataclass
class Lab:
    runs: Path
    data: Path
    finished: str
    stopped: str
    live: str = ""
    queued: tuple[str, ...] = ()


def user_run(runs: Path, name: str, **status) -> str:
    return create_run(make_config({**TINY, "name": name}), runs, status=status).name


@pytest.fixture
def lab(runs_dir, data_dir, monkeypatch):
    """A finished and a stopped run of the user's: nothing that makes a page refresh itself."""
    monkeypatch.setenv("CIFARNET_DATA", str(data_dir))
    return Lab(
        runs_dir,
        data_dir,
        user_run(runs_dir, "finished", status="finished"),
        user_run(runs_dir, "stopped", status="stopped"),
    )


@contextmanager
def busy(lab: Lab) -> Iterator[Lab]:
    """``lab`` with a run "training" (a live stand-in process) and an experiment whose two runs wait as queued
    (this test holds the queue's lock and every slot, so neither the worker nor the experiment's own start runs
    them)."""
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "cifarnet"])
    lock = try_lock(lab.runs / QUEUE_LOCK_FILE)
    slots = [take_slot(lab.runs, patient=False) for _ in range(max_live_runs())]
    try:
        live = user_run(lab.runs, "live", status="running", pid=trainer.pid)
        experiment = start_experiment(make_config(TINY), {"norm": ["bn", "gn"]}, None, "waiting", lab.runs, lab.data)
        yield replace(lab, live=live, queued=tuple(info.run_id for _, info in experiment_runs(experiment)))
    finally:
        trainer.kill()
        trainer.wait()
        for held in [lock, *slots]:
            os.close(held)


def status(lab: Lab, run_id: str) -> str:
    return read_run(lab.runs / run_id).status


# ---- AppTest: what the server does with a crafted widget value ----------------------------------------------------


@pytest.fixture
def address():
    """Sets ``server.address`` as ``streamlit run --server.address`` would (AppTest runs pages in this process)."""
    before = streamlit_config.get_option("server.address")
    yield lambda value: streamlit_config.set_option("server.address", value)
    streamlit_config.set_option("server.address", before)


def labels(at: AppTest) -> str:
    return "\n".join(button.label for button in at.button)


def crafted_click(at: AppTest, address, find) -> None:
    """Click a control the page offers on this machine, once the server is shared: the widget's value reaches
    the server as a crafted message would, and its callback (registered when it was drawn) runs."""
    address("localhost")
    at.run()
    widget = find(at)
    address("0.0.0.0")
    widget.click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def by_label(label: str):
    return lambda at: next(button for button in at.button if button.label == label)


@pytest.mark.heavy
def test_shared_without_a_token_a_crafted_click_changes_nothing(lab, app, address, monkeypatch):
    monkeypatch.delenv(access.TOKEN_ENV, raising=False)
    with busy(lab) as training:
        crafted_stop_and_cancel(training, app, address)
    at = app("train", run=lab.stopped)
    crafted_click(at, address, lambda at: at.button(key=f"resume-{lab.stopped}"))
    assert status(lab, lab.stopped) == "stopped" and not (lab.runs / lab.stopped / "pid").exists()
    before = {info.run_id for info in list_runs(lab.runs)}
    crafted_click(at, address, by_label("Launch run"))
    crafted_click(at, address, by_label("Compare norms"))
    assert {info.run_id for info in list_runs(lab.runs)} == before

    at = app("runs")
    address("localhost")
    at.run()
    victim = next(box for box in at.selectbox if box.label == "Your run")
    victim.select(next(option for option in victim.options if lab.finished in option)).run()
    next(box for box in at.checkbox if box.label == "Yes, delete its folder").check().run()
    crafted_click(at, address, by_label("Delete"))
    assert (lab.runs / lab.finished).is_dir()


def crafted_stop_and_cancel(lab: Lab, app: Callable[..., AppTest], address) -> None:
    at = app("train", run=lab.live)
    assert CONTROL.search(labels(at))  # on this machine: offered
    address("0.0.0.0")
    at.run()
    assert not CONTROL.search(labels(at)), labels(at)
    assert "reachable from the network" in texts(at.warning)

    crafted_click(at, address, lambda at: at.button(key=f"stop-{lab.live}"))
    assert not (lab.runs / lab.live / "STOP").exists()
    crafted_click(at, address, lambda at: at.button(key=f"cancel-{lab.queued[0]}"))
    assert status(lab, lab.queued[0]) == "queued"


@pytest.mark.heavy
def test_a_token_unlocks_one_session_and_a_forged_session_stays_locked(lab, app, address, monkeypatch):
    monkeypatch.setenv(access.TOKEN_ENV, TOKEN)
    address("0.0.0.0")
    with busy(lab) as training:
        unlock_then_forge(training, app)


def unlock_then_forge(lab: Lab, app: Callable[..., AppTest]) -> None:
    at = app("train", run=lab.live)
    assert not CONTROL.search(labels(at))
    box = at.text_input(key=access.INPUT_KEY)
    box.input("not-the-token-but-long-enough").run()
    assert "Wrong access token" in texts(at.error) and not CONTROL.search(labels(at))
    assert at.text_input(key=access.INPUT_KEY).value == ""  # emptied: never sent back to the browser

    at.text_input(key=access.INPUT_KEY).input(TOKEN).run()
    assert "Launch run" in labels(at) and "Stop run" in labels(at), labels(at)
    assert not [box for box in at.text_input if box.key == access.INPUT_KEY]
    assert TOKEN not in repr(at.main) + repr(at.sidebar)  # drawn nowhere

    at.session_state[access.UNLOCKED_KEY] = b"forged"  # a session that never typed the token
    at.button(key=f"stop-{lab.live}").click()
    at.run()
    assert not (lab.runs / lab.live / "STOP").exists()
    assert not CONTROL.search(labels(at))
    at.session_state[access.UNLOCKED_KEY] = True
    at.run()
    assert not CONTROL.search(labels(at))


def test_a_short_token_is_refused_in_one_line(app, address, monkeypatch):
    monkeypatch.setenv(access.TOKEN_ENV, "letmein")
    address("0.0.0.0")
    at = app("train")
    assert "CIFARNET_TOKEN is too short (7 characters; at least 16)" in texts(at.warning)
    assert not [box for box in at.text_input if box.key == access.INPUT_KEY]
    assert not CONTROL.search(labels(at))


# ---- the real server in a real browser -----------------------------------------------------------------------------


def buttons(page) -> str:
    """The page's buttons once its rerun is over (pages that follow a live run rerun parts of themselves every
    few seconds, so on a busy machine that moment can take a while)."""
    settle(page, timeout_ms=120_000)
    return "\n".join(page.get_by_role("button").all_inner_texts())


@pytest.mark.slow
@pytest.mark.browser
@browser_only
def test_shared_without_a_token_no_page_offers_a_control(lab, browser, tmp_path):
    with dashboard_server(
        lab.runs, lab.data, tmp_path / "server.log", options=SHARED, env_extra={access.TOKEN_ENV: ""}
    ) as url:
        assert ipaddress.ip_address("0.0.0.0") in listening(urlparse(url).port)  # shared, as asked
        page = new_tab(browser)
        page.set_default_timeout(90_000)  # the first page imports torch; ~8 engineers share this machine's 2 cores
        for address in [*(f"{url}/{'' if name == 'home' else name}" for name in PAGES), f"{url}/train?run=stopped"]:
            page.goto(address)
            page.get_by_text("is reachable from the network").wait_for()
            assert not CONTROL.search(offered := buttons(page)), (address, offered)
        with busy(lab) as training:  # Stop and Cancel: the Train page now refreshes itself, so it never settles
            page.goto(f"{url}/train?run={training.live}")
            page.get_by_text(f"Run {training.live} · running").wait_for()  # the Stop button's place
            page.get_by_text("Experiment waiting").wait_for()  # the Cancel buttons come just after its table
            page.get_by_text("Augmentation preview").wait_for()  # the page's end
            page.wait_for_timeout(2000)
            offered = "\n".join(page.get_by_role("button").all_inner_texts())
            assert not CONTROL.search(offered), offered


@pytest.mark.browser
@browser_only
def test_shared_with_a_token_asks_once_and_never_shows_it(lab, browser, tmp_path):
    with dashboard_server(
        lab.runs, lab.data, tmp_path / "server.log", options=SHARED, env_extra={access.TOKEN_ENV: TOKEN}
    ) as url:
        page = new_tab(browser)
        page.set_default_timeout(90_000)
        page.goto(f"{url}/train?run={lab.stopped}")
        field = page.get_by_label("Access token", exact=True)
        field.wait_for()
        assert not CONTROL.search(buttons(page))

        field.fill("not-the-token-but-long-enough")
        field.press("Enter")
        page.get_by_text("Wrong access token").wait_for()
        assert not CONTROL.search(buttons(page)) and field.input_value() == ""

        field.fill(TOKEN)
        field.press("Enter")
        page.get_by_role("button", name="Launch run").wait_for()
        assert "Resume run" in buttons(page)
        assert TOKEN not in page.content() and TOKEN not in page.url

        page.get_by_role("link", name="Runs").first.click()  # the same session: no second prompt
        page.get_by_role("button", name="Delete").wait_for()
        assert TOKEN not in page.content() and TOKEN not in page.url
        assert page.get_by_label("Access token", exact=True).count() == 0


# ---- the other processes: no port at all ---------------------------------------------------------------------------


@pytest.mark.heavy
def test_queue_worker_and_trainers_open_no_network_socket(runs_dir, data_dir, monkeypatch):
    """An experiment's worker and its trainers, looked at while they live: not one TCP or UDP socket. The runs
    are stopped once a trainer has been seen training for a while (the test needs no finished run). One run at a
    time, so the second waits for the queue worker (the first starts at once, without one)."""
    monkeypatch.setenv("CIFARNET_MAX_RUNS", "1")
    experiment = start_experiment(make_config(TINY), {"norm": ["bn", "gn"]}, None, "ports", runs_dir, data_dir)
    seen: dict[str, set[int]] = {"worker": set(), "trainer": set()}
    exposed, training_looks = [], 0
    deadline = time.time() + 600  # a trainer's start takes minutes when the machine is busy
    try:
        while not (seen["worker"] and training_looks >= 20):
            assert time.time() < deadline and pending(experiment_runs(load_experiment(experiment.name, runs_dir))), seen
            pids = {("worker", pid) for pid in processes_of(runs_dir, b"queue")}
            for _, info in experiment_runs(experiment):
                pid = trainer_pid(info.path, info.status_record)
                if info.status == "running" and process_alive(pid):
                    pids.add(("trainer", pid))
            training_looks += any(kind == "trainer" for kind, _ in pids)
            for kind, pid in pids:
                seen[kind].add(pid)
                exposed += [(kind, pid, socket) for socket in sockets_of(pid)]
            time.sleep(0.1)
    finally:
        for _, info in experiment_runs(experiment):
            if info.status == "queued":
                cancel_run(info.run_id, runs_dir)
            elif info.status in LIVE:
                request_stop(info.run_id, runs_dir)
    assert not exposed, exposed
    wait_for(lambda: not processes_of(runs_dir, b"queue"), timeout=120)
