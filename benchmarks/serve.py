"""Load test of `vaekit serve` on loopback: requests/s, latency percentiles, errors and the
server's memory, for /v1/decode (batch 1 and 64) and /v1/encode (batch 1 and 64).

    python benchmarks/serve.py RUN --seconds 60 --clients 16        # the acceptance run
    python benchmarks/serve.py RUN --seconds 5                      # a smoke test

The server is the real command (`python -m vaekit serve RUN`) in its own process, with
OMP_NUM_THREADS=--server-threads (default 1: a batch of 1 gains nothing from a second
thread, and the clients need the other core). The clients are `--clients` keep-alive HTTP/1.1
connections driven by one asyncio loop in this process, each sending its next request as
soon as the last is answered (a closed loop), for `--seconds` per scenario or until
`--max-requests` requests (bounded). First every scenario runs for `--warmup` seconds
uncounted (the server reaches its working set: buffers for the largest answers); then each
is measured. Latency is from writing a request to reading the last byte of its answer.
Errors are answers other than 200 and broken connections. RSS is the server's resident
memory (/proc/PID/status VmRSS) after the warm-up, before and after each scenario and at the
end; growth is the end against after the warm-up.

Prints a Markdown table and writes JSON to --out (default
benchmarks/results/serve/serve-YYYYMMDD-HHMMSS.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from machine import cpu_name  # benchmarks/machine.py, a sibling module


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


class Server:
    """`python -m vaekit serve RUN` on a free loopback port, its log in `log_path`."""

    def __init__(self, run: Path, threads: int, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        command = [sys.executable, "-m", "vaekit", "serve", str(run), "--port", str(self.port)]
        self.log = log_path.open("w")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"vaekit serve exited ({self.process.returncode}); see {log_path}")
            try:
                if get_json(self.url + "/healthz")["status"] == "ok":
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"vaekit serve did not answer within 300 s; see {log_path}")
            time.sleep(0.2)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def request_bytes(path: str, body: dict, port: int) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + payload


async def read_answer(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 answer with a Content-Length; returns its status code."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def client(port, request, deadline, budget, latencies, errors) -> None:
    """One keep-alive connection sending `request` until the deadline or the shared budget
    (a one-element list: requests left) runs out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            try:
                writer.write(request)
                status = await read_answer(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                errors.append("connection")
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(str(status))
    finally:
        writer.close()


async def load(port: int, request: bytes, clients: int, seconds: float, max_requests: int):
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    budget = [max_requests]
    await asyncio.gather(
        *(
            client(port, request, started + seconds, budget, latencies, errors)
            for _ in range(clients)
        )
    )
    return latencies, errors, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def scenarios(info: dict, seed: int = 0) -> dict[str, tuple[str, dict]]:
    """name -> (path, body): codes from N(0, I), examples uniform in [0, 1] (valid for any
    image model; table models get N(0, 1) rows)."""
    generator = torch.Generator().manual_seed(seed)
    latent, shape = info["latent_dim"], info["data"]["shape"]

    def codes(n: int) -> list:
        return torch.randn(n, latent, generator=generator).tolist()

    def examples(n: int) -> list:
        if info["data"]["kind"] == "table":
            return torch.randn(n, *shape, generator=generator).tolist()
        return torch.rand(n, *shape, generator=generator).flatten(1).tolist()

    return {
        "decode, batch 1": ("/v1/decode", {"z": codes(1)}),
        "decode, batch 64": ("/v1/decode", {"z": codes(64)}),
        "encode, batch 1": ("/v1/encode", {"x": examples(1)}),
        "encode, batch 64": ("/v1/encode", {"x": examples(64)}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run folder to serve")
    parser.add_argument("--seconds", type=float, default=60.0, help="per scenario (60)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections (16)")
    parser.add_argument("--warmup", type=float, default=3.0, help="uncounted seconds first (3)")
    parser.add_argument("--max-requests", type=int, default=500_000, help="per scenario")
    parser.add_argument("--server-threads", type=int, default=1, help="OMP_NUM_THREADS (1)")
    parser.add_argument("--only", help="run only the scenarios whose name contains this")
    parser.add_argument("--out", type=Path, help="JSON output file")
    args = parser.parse_args()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or Path(__file__).parent / "results" / "serve" / f"serve-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    server = Server(
        args.run, args.server_threads, Path(tempfile.gettempdir()) / "vaekit-serve-bench.log"
    )
    try:
        info = get_json(server.url + "/v1/info")
        rss_start = rss_mb(server.process.pid)
        chosen = {
            name: request_bytes(path, body, server.port)
            for name, (path, body) in scenarios(info).items()
            if not args.only or args.only in name
        }
        for request in chosen.values():  # every scenario once: the server's working set
            asyncio.run(load(server.port, request, args.clients, args.warmup, args.max_requests))
        rss_first = rss_mb(server.process.pid)
        rows = []
        for name, request in chosen.items():
            rss_before = rss_mb(server.process.pid)
            latencies, errors, elapsed = asyncio.run(
                load(server.port, request, args.clients, args.seconds, args.max_requests)
            )
            ms = [1000 * t for t in latencies]
            rows.append(
                {
                    "scenario": name,
                    "requests": len(latencies),
                    "seconds": round(elapsed, 2),
                    "requests_per_s": round(len(latencies) / elapsed, 1),
                    "p50_ms": round(statistics.median(ms), 2),
                    "p90_ms": round(percentile(ms, 90), 2),
                    "p99_ms": round(percentile(ms, 99), 2),
                    "max_ms": round(max(ms), 2),
                    "errors": len(errors),
                    "error_kinds": sorted(set(errors)),
                    "rss_before_mb": round(rss_before, 1),
                    "rss_after_mb": round(rss_mb(server.process.pid), 1),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        healthy = get_json(server.url + "/healthz")["status"] == "ok"
        rss_end = rss_mb(server.process.pid)
    finally:
        server.close()
    result = {
        "run": str(args.run),
        "model": f"{info['model']} {info['arch']}, latent_dim {info['latent_dim']}, "
        f"data {info['data']['name']} {info['data']['shape']}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "clients": args.clients,
        "seconds_per_scenario": args.seconds,
        "warmup_seconds": args.warmup,
        "server_threads": args.server_threads,
        "rss_start_mb": round(rss_start, 1),
        "rss_after_warmup_mb": round(rss_first, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_percent": round(100 * (rss_end / rss_first - 1), 2),
        "healthy_after": healthy,
        "scenarios": rows,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\n{result['model']}; {args.clients} clients, {args.seconds:g} s per scenario, "
        f"{result['cpu']} ({result['cores']} cores)\n"
    )
    print("| scenario | requests/s | p50 ms | p99 ms | max ms | errors | RSS before -> after MiB |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['scenario']} | {row['requests_per_s']:,.0f} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['max_ms']:.1f} | {row['errors']} | "
            f"{row['rss_before_mb']:.0f} -> {row['rss_after_mb']:.0f} |"
        )
    print(
        f"\nRSS after the warm-up {result['rss_after_warmup_mb']} MiB, at the end "
        f"{result['rss_end_mb']} MiB ({result['rss_growth_percent']:+.2f}%); wrote {out}"
    )


if __name__ == "__main__":
    main()
