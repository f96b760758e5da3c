"""``emollm serve`` under load on loopback: N concurrent clients post real generated clips, M requests in all; no
request may fail or be lost. Reports latency (p50/p95), requests/s and the server process' peak RSS, then a burst
beyond the queue's capacity, which must be answered 503 + ``Retry-After`` at once, never hang.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_serve.py [--quick]`` (also part of ``make bench``). The server
is a subprocess on 127.0.0.1 and a free port; every wait is bounded and the server is stopped on every exit path.
Clips are generated from real face photos with espeak-ng speech (a tone without espeak-ng).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from emollm.media import fixtures  # noqa: E402

SENTENCES = ["I passed the exam, this is wonderful news!", "I cannot believe you lied to me again.",
             "My grandmother passed away last night.", "Well, I suppose we will see tomorrow."]  # fmt: skip


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of the process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(client: httpx.Client, url: str, clip: Path) -> tuple[int, float, str]:
    """(status, seconds, label or error); status 0 = no answer (lost)."""
    t = time.perf_counter()
    try:
        with open(clip, "rb") as f:
            r = client.post(f"{url}/v1/analyze", files={"file": (clip.name, f, "video/mp4")})
        body = r.json()
        return r.status_code, time.perf_counter() - t, body.get("label") or body.get("error") or "-"
    except (httpx.HTTPError, ValueError) as e:
        return 0, time.perf_counter() - t, f"{type(e).__name__}: {e}"


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 clients, 8 requests")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 8; --quick 4)")
    parser.add_argument("--requests", type=int, help="requests in all (default 24; --quick 8)")
    parser.add_argument("--workers", type=int, default=1, help="server worker threads (one analyzer each)")
    parser.add_argument("--reasoning", default="template", choices=["llm", "template"], help="clue-mode rationale")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="bound of the whole run")
    args = parser.parse_args()
    clients = args.clients or (4 if args.quick else 8)
    total = args.requests or (8 if args.quick else 24)
    deadline = time.monotonic() + args.timeout_s
    speech = "speech" if shutil.which("espeak-ng") else "tone"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = []
        for i, text in enumerate(SENTENCES):
            clip = root / f"clip{i}.mp4"
            photo = "astronaut" if i % 2 == 0 else "grace_hopper"
            fixtures.make_face_clip(clip, photo, seconds=3.0, size=(480, 360), audio=speech, text=text)
            clips.append(clip)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        queue = clients  # capacity workers + queue >= clients: the load phase must never see a 503
        cmd = [sys.executable, "-m", "emollm.apps.serve.cli", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(args.workers), "--queue", str(queue), "--reasoning", args.reasoning,
               "--frames", "8", "--timeout-s", "300", "--log-level", "warning", "--tmp-dir", str(root)]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            with httpx.Client(timeout=httpx.Timeout(330.0)) as probe_client:
                while True:
                    if server.poll() is not None:
                        print(f"the server exited ({server.returncode}):\n{server.stderr.read()[-3000:]}")
                        return 1
                    try:
                        if probe_client.get(f"{url}/health").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        print("the server did not start in time")
                        return 1
                    time.sleep(0.2)
                cold = post(probe_client, url, clips[0])  # loads the clue models
            rss_idle = peak_rss_mb(server.pid)

            limits = httpx.Limits(max_connections=clients * 3)
            with httpx.Client(timeout=httpx.Timeout(330.0), limits=limits) as client:
                t = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    results = list(pool.map(lambda i: post(client, url, clips[i % len(clips)]), range(total)))
                wall = time.perf_counter() - t
                burst_n = 2 * (args.workers + queue)
                t = time.perf_counter()
                with ThreadPoolExecutor(burst_n) as pool:
                    burst = list(pool.map(lambda i: post(client, url, clips[i % len(clips)]), range(burst_n)))
                burst_wall = time.perf_counter() - t
            rss_peak = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)

    ok = [s for s, _, _ in results if s == 200]
    lat = [sec for s, sec, _ in results if s == 200] or [float("nan")]
    failed = [(s, msg) for s, _, msg in results if s not in (0, 200)]
    lost = [msg for s, _, msg in results if s == 0]
    labels = sorted({msg for s, _, msg in results if s == 200})
    print(f"emollm serve, clue mode ({args.reasoning} rationale), {args.workers} worker(s), queue {queue}; "
          f"3 s 480x360 clips with {speech}, {len(clips)} different\n")  # fmt: skip
    print(table(
        ["phase", "clients", "requests", "ok", "failed", "lost", "p50 s", "p95 s", "max s", "req/s", "peak RSS MiB"],
        [["cold (1st)", "1", "1", str(int(cold[0] == 200)), str(int(cold[0] not in (0, 200))), str(int(cold[0] == 0)),
          f"{cold[1]:.2f}", "-", "-", "-", f"{rss_idle:.0f}"],
         ["load", str(clients), str(total), str(len(ok)), str(len(failed)), str(len(lost)), f"{pct(lat, 50):.2f}",
          f"{pct(lat, 95):.2f}", f"{max(lat):.2f}", f"{len(ok) / wall:.2f}", f"{rss_peak:.0f}"]],
    ))  # fmt: skip
    busy = [sec for s, sec, _ in burst if s == 503]
    print(f"\nlabels: {', '.join(labels)}")
    print(f"burst of {len(burst)} at once (capacity {args.workers + queue}): "
          f"{sum(s == 200 for s, _, _ in burst)} answered 200, {len(busy)} answered 503 "
          f"(slowest 503 in {max(busy, default=0):.2f} s), {sum(s == 0 for s, _, _ in burst)} lost, "
          f"{sum(s not in (0, 200, 503) for s, _, _ in burst)} other; burst done in {burst_wall:.1f} s")  # fmt: skip
    bad = failed + [(0, m) for m in lost] + [(s, m) for s, _, m in burst if s not in (200, 503)]
    for status, msg in bad[:5]:
        print(f"  FAILED {status}: {msg}")
    return 0 if not bad and cold[0] == 200 else 1


if __name__ == "__main__":
    raise SystemExit(main())
