"""`vaekit serve` on the command line: its one-line errors (missing run, missing extra), the
warning for a host other than loopback, and the token (uvicorn.run is replaced by a stub)."""

from __future__ import annotations

import sys

import pytest

from helpers import assert_one_line_error, run_cli, train_bars_run
from vaekit.cli.serve import EXTRA_MISSING, is_loopback

# newer starlette asks for httpx2 in its TestClient; httpx still works
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_bars_run(tmp_path_factory.mktemp("serve-cli"))


@pytest.fixture
def served(monkeypatch):
    """uvicorn.run recorded instead of run: {"app", "host", "port"} of the last call."""
    uvicorn = pytest.importorskip("uvicorn")
    pytest.importorskip("fastapi")
    calls: dict = {}
    services = []

    def record(app, host, port, **options):
        calls.update(app=app, host=host, port=port)
        services.append(app.state.service)

    monkeypatch.setattr(uvicorn, "run", record)
    yield calls
    for service in services:
        service.close()


def test_loopback_hosts() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.4", "example.org", ""]))


def test_a_missing_run_is_named_first(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # not even the extra is there
    code, _, err = run_cli(["serve", tmp_path / "nope"], capsys)
    assert_one_line_error(code, err)
    assert "nope" in err


def test_a_missing_extra_is_one_line(run_dir, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    code, _, err = run_cli(["serve", run_dir], capsys)
    assert_one_line_error(code, err)
    assert err.strip() == f"vaekit: error: {EXTRA_MISSING}"


def test_bad_port_is_refused(run_dir, capsys) -> None:
    code, _, err = run_cli(["serve", run_dir, "--port", "70000"], capsys)
    assert_one_line_error(code, err)


def test_loopback_by_default_and_a_warning_elsewhere(run_dir, served, capsys) -> None:
    code, _, err = run_cli(["serve", run_dir, "--port", "8123"], capsys)
    assert code == 0 and served["host"] == "127.0.0.1" and served["port"] == 8123
    assert "warning" not in err and "http://127.0.0.1:8123/" in err
    code, _, err = run_cli(["serve", run_dir, "--host", "0.0.0.0"], capsys)
    assert code == 0 and served["host"] == "0.0.0.0"
    assert "warning: serving on 0.0.0.0 with no authentication" in err
    code, _, err = run_cli(["serve", run_dir, "--host", "0.0.0.0", "--token", "t"], capsys)
    assert "no authentication" not in err and "plain HTTP" in err


def test_the_token_comes_from_the_flag_or_the_environment(run_dir, served, capsys, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("VAEKIT_SERVE_TOKEN", "from-env")
    assert run_cli(["serve", run_dir], capsys)[0] == 0
    client = TestClient(served["app"], base_url="http://127.0.0.1")
    assert client.get("/v1/map").status_code == 401
    assert client.get("/v1/map", headers={"Authorization": "Bearer from-env"}).status_code == 200
    other_host = client.get("/healthz", headers={"Host": "attacker.example"})
    assert other_host.status_code == 400 and "not served here" in other_host.json()["error"]
