"""`vaekit serve`: the inference service (apps/serving.py) against the model it wraps, and
the JSON API (apps/server.py) through httpx: every endpoint, the bearer token, and a corpus
of 60+ malformed requests that must each get a one-line 4xx JSON error while the server
stays healthy. The API tests are skipped without the serve extra (fastapi) and httpx."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import train_bars_run
from vaekit.apps.anomaly import anomaly_scores
from vaekit.apps.serving import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    Batcher,
    LimitError,
    Limits,
    Projection,
    Service,
    decode_png,
    parse_numbers,
    png_base64,
)
from vaekit.core.errors import DataError

SHAPE = (1, 8, 8)
# newer starlette asks for httpx2 in its TestClient; httpx still works
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_bars_run(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def service(run_dir):
    opened = Service(run_dir)
    yield opened
    opened.close()


def png_of(pixels: np.ndarray, mode: str = "L", fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def bar_image() -> np.ndarray:
    pixels = np.zeros((8, 8), dtype=np.uint8)
    pixels[2, :] = 220  # the horizontal bar of class 0
    return pixels


# --- inputs -----------------------------------------------------------------------------
def test_numbers_are_taken_shaped_or_flat_and_refused_with_the_field_named() -> None:
    x = torch.rand(3, *SHAPE)
    shaped = parse_numbers(x.tolist(), "x", SHAPE, 8)
    flat = parse_numbers(x.flatten(1).tolist(), "x", SHAPE, 8)
    assert torch.equal(shaped, x) and torch.equal(flat, x)
    bad = {
        "ragged": [[0.0] * 64, [0.0] * 63],
        "strings": [["0.5"] * 64],
        "booleans": [[True] * 64],
        "nan": [[float("nan")] * 64],
        "huge": [[1e300] * 64],
        "shape": [[0.0] * 65],
        "empty": [],
        "not a list": 3,
    }
    for name, value in bad.items():
        with pytest.raises(DataError, match=r"^x: ") as caught:
            parse_numbers(value, "x", SHAPE, 8)
        assert "\n" not in str(caught.value), name
    with pytest.raises(LimitError, match=r"^x: 9 examples, more than the limit of 8"):
        parse_numbers([[0.0] * 64] * 9, "x", SHAPE, 8)


def test_png_round_trip_and_refusals() -> None:
    images = torch.rand(2, *SHAPE)
    decoded = torch.stack([decode_png(p, "png", SHAPE) for p in png_base64(images)])
    assert torch.allclose(decoded, images, atol=0.5 / 255 + 1e-6)  # 8-bit quantisation
    with_prefix = "data:image/png;base64," + png_base64(images[:1])[0]
    assert torch.equal(decode_png(with_prefix, "png", SHAPE), decoded[0])
    refusals = {
        "not valid base64": "!!!",
        "not a readable PNG": base64.b64encode(b"hello").decode(),
        "image is 9x9 pixels": png_of(np.zeros((9, 9), dtype=np.uint8)),
        "not a readable PNG image": png_of(bar_image(), fmt="JPEG"),
        "expected a base64 PNG string": 5,
    }
    for message, value in refusals.items():
        with pytest.raises(DataError, match=f"^png\\[0\\]: {message}"):
            decode_png(value, "png[0]", SHAPE)


# --- one worker, batched -----------------------------------------------------------------
def wait_for_queue(batcher: Batcher, length: int) -> None:
    deadline = time.monotonic() + 10
    while len(batcher.queue) != length and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(batcher.queue) == length


def test_batcher_joins_waiting_calls_and_keeps_a_bad_one_apart() -> None:
    batcher = Batcher(max_rows=64)
    gate = threading.Event()

    def double(x: torch.Tensor) -> torch.Tensor:
        if (x < 0).any():
            raise DataError("x: negative")
        return x * 2

    def round_of(values: list[float]) -> dict[float, object]:
        results: dict[float, object] = {}

        def call(v: float) -> None:
            try:
                results[v] = batcher.call("double", double, torch.tensor([[v]]))
            except DataError as err:
                results[v] = err

        blocker = threading.Thread(target=batcher.call, args=(None, lambda _: gate.wait(10), 0))
        blocker.start()
        wait_for_queue(batcher, 0)  # the worker holds the blocking job
        threads = [threading.Thread(target=call, args=(v,)) for v in values]
        for thread in threads:
            thread.start()
        wait_for_queue(batcher, len(values))
        gate.set()
        for thread in [blocker, *threads]:
            thread.join(10)
        gate.clear()
        return results

    before = batcher.batches
    results = round_of([float(v) for v in range(8)])
    assert batcher.batches - before == 2  # the blocking job, then all eight in one call
    assert {v: r.item() for v, r in results.items()} == {v: 2 * v for v in results}
    results = round_of([1.0, -1.0, 3.0])
    assert isinstance(results[-1.0], DataError)
    assert results[1.0].item() == 2.0 and results[3.0].item() == 6.0
    batcher.close()
    assert not batcher.thread.is_alive()


def test_projection_inverts_in_its_plane() -> None:
    codes = torch.randn(50, 5, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 6)
    projection = Projection.fit(codes)
    assert projection.method == "pca"
    points = projection.to_map(codes)
    assert torch.allclose(projection.to_map(projection.to_codes(points)), points, atol=1e-5)
    assert points[:, 0].var() >= points[:, 1].var()  # first axis: most variance
    flat = Projection.fit(codes[:, :2])
    assert flat.method == "z" and torch.equal(flat.to_map(codes[:, :2]), codes[:, :2])


# --- the service answers what the model computes ----------------------------------------
def test_service_matches_the_model(service: Service) -> None:
    model, test = service.model, service.run.test
    x = test.x[:4]
    with torch.no_grad():
        mean, log_var = model.encode(x)
        z = torch.randn(3, model.latent_dim, generator=torch.Generator().manual_seed(1))
        decoded = model.decode_mean(z)
        reconstructed = model.reconstruct(x)
    encoded = service.encode(x=x.tolist())
    assert torch.allclose(torch.tensor(encoded["z_mean"]), mean)
    assert torch.allclose(torch.tensor(encoded["z_log_var"]), log_var)
    assert torch.allclose(torch.tensor(service.decode(z.tolist())["x_mean"]), decoded)
    assert torch.allclose(torch.tensor(service.reconstruct(x=x.tolist())["x_mean"]), reconstructed)
    png = service.reconstruct(png=png_base64(x), fmt="png")["png"]
    assert len(png) == 4 and decode_png(png[0], "png", SHAPE).shape == SHAPE


def test_scores_are_the_anomaly_scores_whatever_the_batch(service: Service) -> None:
    x = service.run.test.x[:3]
    expected = anomaly_scores(service.model, x, ("elbo",), 10)["elbo"]
    together = service.score(x=x.tolist())
    alone = [service.score(x=x[i : i + 1].tolist())["score"][0] for i in range(3)]
    assert together["score"] == pytest.approx(expected.tolist(), rel=1e-6)
    assert alone == pytest.approx(together["score"], rel=1e-6)
    assert together["unit"].startswith("nats per example")
    assert all(0 <= p <= 100 for p in together["test_percentile"])
    noise = torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(3))
    assert service.score(x=noise.tolist())["test_percentile"][0] > 90  # noise is unusual


def test_sampling_is_seeded(service: Service) -> None:
    first = service.sample(5, seed=3)["x_mean"]
    assert service.sample(5, seed=3)["x_mean"] == first
    assert service.sample(5, seed=4)["x_mean"] != first
    assert torch.tensor(first).shape == (5, *SHAPE)
    with pytest.raises(LimitError, match="^n: 1,025 samples asked, more than the limit"):
        service.sample(1025)


def test_neighbors_of_a_test_example_start_with_itself(service: Service) -> None:
    test = service.run.test
    index = int(service.pool[5])
    found = service.neighbors(x=test.x[index : index + 1].tolist(), k=4)["neighbors"][0]
    assert found[0]["index"] == index and found[0]["distance"] == pytest.approx(0, abs=1e-5)
    assert [n["distance"] for n in found] == sorted(n["distance"] for n in found)
    assert found[0]["label"] == str(int(test.y[index]))
    by_code = service.neighbors(z=service.encode(x=test.x[index : index + 1].tolist())["z_mean"])
    assert by_code["neighbors"][0][0]["index"] == index


def test_interpolation_runs_from_a_to_b(service: Service) -> None:
    z_a, z_b = [-1.0, 0.5], [1.5, -0.5]
    path = service.interpolate(z_a, z_b, steps=6)
    assert len(path["x_mean"]) == 6 and path["z"][0] == z_a and path["z"][-1] == z_b
    ends = service.decode([z_a, z_b])["x_mean"]
    assert torch.allclose(torch.tensor(path["x_mean"])[[0, -1]], torch.tensor(ends), atol=1e-6)


def test_map_info_and_examples_describe_the_test_set(service: Service) -> None:
    test = service.run.test
    latent_map = service.latent_map()
    assert len(latent_map["points"]) == len(test)  # 128 test examples, all drawn
    first = latent_map["indices"][0]
    assert latent_map["labels"][0] == int(test.y[first])
    assert latent_map["method"] == "z" and latent_map["axes"] == ["z[0]", "z[1]"]
    example = service.example(first)
    assert latent_map["points"][0] == pytest.approx(example["z_mean"], abs=1e-5)
    info = service.info()
    kl = [row["KL"] for row in info["dimensions"]]
    assert kl == sorted(kl, reverse=True) and info["sliders"] == [
        r["dim"] for r in info["dimensions"]
    ]
    assert info["metrics"]["test_neg_elbo"] > 0 and info["data"]["shape"] == list(SHAPE)
    assert info["limits"]["batch"] == MAX_BATCH


# --- the HTTP API -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(service):
    pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'vaekit[serve]'")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from vaekit.apps.server import make_app

    with TestClient(make_app(service), raise_server_exceptions=False) as opened:
        yield opened


def test_every_endpoint_answers(client, service: Service) -> None:
    x = service.run.test.x[:2]
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/v1/info").json()["latent_dim"] == 2
    assert len(client.get("/v1/map").json()["points"]) == len(service.run.test)
    assert client.get("/v1/examples/3").json()["index"] == 3
    encoded = client.post("/v1/encode", json={"x": x.tolist()}).json()
    assert len(encoded["z_mean"]) == 2
    decoded = client.post("/v1/decode", json={"z": encoded["z_mean"], "format": "png"}).json()
    assert len(decoded["png"]) == 2
    assert len(client.post("/v1/sample", json={"n": 3, "seed": 1}).json()["x_mean"]) == 3
    recon = client.post("/v1/reconstruct", json={"png": png_base64(x)}).json()["x_mean"]
    assert torch.tensor(recon).shape == (2, *SHAPE)
    assert len(client.post("/v1/score", json={"x": x.tolist()}).json()["score"]) == 2
    near = client.post("/v1/neighbors", json={"x": x.tolist(), "k": 3}).json()["neighbors"]
    assert [len(row) for row in near] == [3, 3]
    frames = client.post("/v1/interpolate", json={"z_a": [0, 0], "z_b": [1, 1], "steps": 4})
    assert len(frames.json()["x_mean"]) == 4
    page = client.get("/")
    assert "explorer.js" in page.text and "'self'" in page.headers["content-security-policy"]
    assert client.get("/static/explorer.js").status_code == 200
    schema = client.get("/docs").json()
    assert {"/v1/encode", "/v1/decode", "/v1/score", "/healthz"} <= set(schema["paths"])


def test_concurrent_requests_get_their_own_answers(client, service: Service) -> None:
    codes = torch.randn(24, 2, generator=torch.Generator().manual_seed(2))
    expected = service.decode(codes.tolist())["x_mean"]
    answers: dict[int, list] = {}

    def ask(i: int) -> None:
        answers[i] = client.post("/v1/decode", json={"z": [codes[i].tolist()]}).json()["x_mean"][0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(codes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    got = torch.tensor([answers[i] for i in range(len(codes))])
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6)


def test_the_token_guards_the_api_only(service: Service) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from vaekit.apps.server import make_app

    guarded = TestClient(make_app(service, token="s3cret"))  # no lifespan: service stays open
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        answer = guarded.post("/v1/decode", json={"z": [[0, 0]]}, headers=headers)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in answer.json()["error"]
    good = guarded.post(
        "/v1/decode", json={"z": [[0, 0]]}, headers={"Authorization": "Bearer s3cret"}
    )
    assert good.status_code == 200
    assert guarded.get("/healthz").status_code == 200 and guarded.get("/").status_code == 200


def raw(text: str) -> dict:
    return {"content": text, "headers": {"Content-Type": "application/json"}}


def bad_requests() -> list[tuple[str, str, str, dict]]:
    """(expected start of the error, method, path, request arguments): 60+ malformed inputs."""
    z_ok, x_ok = [[0.0, 0.0]], [[0.5] * 64]
    png_ok = png_of(bar_image())
    cases: list[tuple[str, str, str, dict]] = [
        ("z: examples shaped (3,)", "POST", "/v1/decode", {"json": {"z": [[0, 0, 0]]}}),
        ("z: value nan", "POST", "/v1/decode", raw('{"z": [[NaN, 0]]}')),
        ("z: value inf", "POST", "/v1/decode", raw('{"z": [[Infinity, 0]]}')),
        ("z: value -inf", "POST", "/v1/decode", raw('{"z": [[0, -Infinity]]}')),
        ("z: expected numbers", "POST", "/v1/decode", {"json": {"z": [["a", 0]]}}),
        ("z: expected numbers", "POST", "/v1/decode", {"json": {"z": [[None, 0]]}}),
        ("z: expected numbers, got true/false", "POST", "/v1/decode", {"json": {"z": [[True, False]]}}),
        ("z: not a rectangular", "POST", "/v1/decode", {"json": {"z": [[0, 0], [0]]}}),
        ("z: expected a non-empty list", "POST", "/v1/decode", {"json": {"z": []}}),
        ("z: Input should be a valid list", "POST", "/v1/decode", {"json": {"z": 5}}),
        ("z: Input should be a valid list", "POST", "/v1/decode", {"json": {"z": {"a": 1}}}),
        ("z: required field missing", "POST", "/v1/decode", {"json": {}}),
        ("foo: unknown field", "POST", "/v1/decode", {"json": {"z": z_ok, "foo": 1}}),
        ("format: Input should be", "POST", "/v1/decode", {"json": {"z": z_ok, "format": "jpeg"}}),
        ("z: 257 examples, more than the limit of 256", "POST", "/v1/decode", {"json": {"z": [[0, 0]] * 257}}),
        ("z: values must lie within", "POST", "/v1/decode", {"json": {"z": [[1e300, 0]]}}),
        ("z: examples shaped (1, 2)", "POST", "/v1/decode", {"json": {"z": [[[0, 0]]]}}),
        ("z: Input should be a valid list", "POST", "/v1/decode", {"json": {"z": "0,0"}}),
        ("z: expected numbers", "POST", "/v1/decode", raw('{"z": [[1' + "0" * 400 + ', 0]]}')),
        ("x: examples shaped (63,)", "POST", "/v1/encode", {"json": {"x": [[0.5] * 63]}}),
        ("x: value nan", "POST", "/v1/encode", raw('{"x": [[' + ", ".join(["NaN"] * 64) + "]]}")),
        ("x: values range from 2", "POST", "/v1/encode", {"json": {"x": [[2.0] * 64]}}),
        ("x: values range from -1", "POST", "/v1/encode", {"json": {"x": [[-1.0] * 64]}}),
        ("x: expected numbers", "POST", "/v1/encode", {"json": {"x": [["a"] * 64]}}),
        ("give the examples as exactly one", "POST", "/v1/encode", {"json": {"x": x_ok, "png": [png_ok]}}),
        ("give the examples as exactly one", "POST", "/v1/encode", {"json": {}}),
        ("png[0]: not valid base64", "POST", "/v1/encode", {"json": {"png": ["!!!"]}}),
        ("png[0]: not valid base64", "POST", "/v1/encode", {"json": {"png": ["abc"]}}),
        ("png[0]: not a readable PNG", "POST", "/v1/encode", {"json": {"png": [base64.b64encode(b"hello").decode()]}}),
        ("png[0]: image is 9x9 pixels", "POST", "/v1/encode", {"json": {"png": [png_of(np.zeros((9, 9), np.uint8))]}}),
        ("png[0]: not a readable PNG", "POST", "/v1/encode", {"json": {"png": [png_of(bar_image(), fmt="JPEG")]}}),
        ("png[0]: expected a base64 PNG string", "POST", "/v1/encode", {"json": {"png": [5]}}),
        ("png: expected a non-empty list", "POST", "/v1/encode", {"json": {"png": []}}),
        ("png[0]: not a readable PNG", "POST", "/v1/encode", {"json": {"png": [base64.b64encode(base64.b64decode(png_ok)[:30]).decode()]}}),
        ("png: 257 images asked, more than the limit of 256", "POST", "/v1/encode", {"json": {"png": [png_ok] * 257}}),
        ("png[1]: image is 8x16", "POST", "/v1/encode", {"json": {"png": [png_ok, png_of(np.zeros((16, 8), np.uint8))]}}),
        ("n: must be at least 1", "POST", "/v1/sample", {"json": {"n": 0}}),
        ("n: 1,025 samples asked, more than the limit of 1,024", "POST", "/v1/sample", {"json": {"n": 1025}}),
        ("n: Input should be a valid integer", "POST", "/v1/sample", {"json": {"n": "5"}}),
        ("n: Input should be a valid integer", "POST", "/v1/sample", {"json": {"n": 5.5}}),
        ("n: Input should be a valid integer", "POST", "/v1/sample", {"json": {"n": True}}),
        ("seed: must be in 0..", "POST", "/v1/sample", {"json": {"n": 2, "seed": -1}}),
        ("seed: Input should be a valid integer", "POST", "/v1/sample", {"json": {"seed": "x"}}),
        ("seed: must be in 0..9223372036854775807, got 9223372036854775808", "POST", "/v1/sample", {"json": {"seed": 2**63}}),
        ("count: unknown field", "POST", "/v1/sample", {"json": {"count": 4}}),
        ("samples: must be at least 1", "POST", "/v1/score", {"json": {"x": x_ok, "samples": 0}}),
        ("samples: 101 posterior samples asked", "POST", "/v1/score", {"json": {"x": x_ok, "samples": 101}}),
        ("x: not a rectangular array", "POST", "/v1/score", {"json": {"x": [[[0.5] * 8] * 8, [0.5] * 3]}}),
        ("format: Input should be", "POST", "/v1/reconstruct", {"json": {"x": x_ok, "format": "gif"}}),
        ("k: must be at least 1", "POST", "/v1/neighbors", {"json": {"x": x_ok, "k": 0}}),
        ("k: 101 neighbours asked", "POST", "/v1/neighbors", {"json": {"x": x_ok, "k": 101}}),
        ("give the inputs as exactly one", "POST", "/v1/neighbors", {"json": {"x": x_ok, "z": z_ok}}),
        ("z: examples shaped (3,)", "POST", "/v1/neighbors", {"json": {"z": [[0, 0, 0]]}}),
        ("steps: must be at least 2", "POST", "/v1/interpolate", {"json": {"z_a": [0, 0], "z_b": [1, 1], "steps": 1}}),
        ("steps: 65 steps asked", "POST", "/v1/interpolate", {"json": {"z_a": [0, 0], "z_b": [1, 1], "steps": 65}}),
        ("method: Input should be", "POST", "/v1/interpolate", {"json": {"z_a": [0, 0], "z_b": [1, 1], "method": "cubic"}}),
        ("z_a: examples shaped (3,)", "POST", "/v1/interpolate", {"json": {"z_a": [0, 0, 0], "z_b": [1, 1]}}),
        ("z_b: required field missing", "POST", "/v1/interpolate", {"json": {"z_a": [0, 0]}}),
        ("index: no test example 99999", "GET", "/v1/examples/99999", {}),
        ("index: Input should be a valid integer", "GET", "/v1/examples/abc", {}),
        ("index: no test example -1", "GET", "/v1/examples/-1", {}),
        ("format: Input should be", "GET", "/v1/examples/1?format=svg", {}),
        ("body: not valid JSON", "POST", "/v1/decode", raw("not json")),
        ("body: not valid JSON", "POST", "/v1/decode", raw('{"z": [[0, 0]]')),
        ("body: Input should be a valid dictionary", "POST", "/v1/decode", raw("[1, 2]")),
        ("body: send JSON with Content-Type", "POST", "/v1/decode", {"content": '{"z": [[0, 0]]}', "headers": {"Content-Type": "text/plain"}}),
        ("body: send JSON with Content-Type", "POST", "/v1/decode", {"content": b"\x00\x01"}),
        ("body: more than the limit of 8,388,608 bytes", "POST", "/v1/decode", raw(" " * (MAX_BODY_BYTES + 1))),
        ("body: could not be read as JSON", "POST", "/v1/decode", raw("[" * 100_000)),
        ("body: ", "POST", "/v1/decode", raw("")),
        ("no such route: /v1/nope", "GET", "/v1/nope", {}),
        ("GET is not allowed on /v1/decode", "GET", "/v1/decode", {}),
        ("DELETE is not allowed on /v1/info", "DELETE", "/v1/info", {}),
    ]  # fmt: skip
    return cases


def test_bad_requests_get_one_line_json_errors_and_the_server_stays_up(client) -> None:
    cases = bad_requests()
    assert len(cases) >= 60
    problems = []
    for expected, method, path, arguments in cases:
        answer = client.request(method, path, **arguments)
        try:
            message = answer.json()["error"]
        except (json.JSONDecodeError, KeyError, TypeError):
            problems.append(f"{method} {path}: {answer.status_code} without a JSON error")
            continue
        if not (400 <= answer.status_code < 500 and message.startswith(expected)):
            problems.append(
                f"{method} {path}: {answer.status_code} {message!r} (want {expected!r})"
            )
        if "\n" in message or not message.strip():
            problems.append(f"{method} {path}: not one line: {message!r}")
    assert problems == []
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/decode", json={"z": [[0, 0]]}).status_code == 200


def test_limits_answer_413_and_422(service: Service, run_dir) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from vaekit.apps.server import make_app

    small = Limits(body_bytes=2000, batch=4, samples=8)
    with TestClient(make_app(run_dir, limits=small)) as limited:
        assert limited.post("/v1/decode", json={"z": [[0.0, 0.0]] * 300}).status_code == 413
        answer = limited.post("/v1/decode", json={"z": [[0, 0]] * 5})
        assert answer.status_code == 422 and answer.json()["error"].startswith("z: 5 examples")
        assert limited.post("/v1/sample", json={"n": 9}).status_code == 422
        assert limited.post("/v1/sample", json={"n": 8}).status_code == 200
