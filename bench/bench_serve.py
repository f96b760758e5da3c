"""``emollm serve`` under load on loopback: N concurrent clients mix uploads of every kind (video clips with speech,
voice files with a subtitle, text files, and the hostile-but-valid inputs of issue 29: a 320 kB text file and a
61 kB subtitle), while slow clients send one byte at a time. No request that should succeed may fail or be lost;
the slow ones must end at the upload deadline (408) without costing anyone else. Reports latency (p50/p95) per kind,
requests/s, the server's resident memory sampled every 0.25 s through the run (bounded: no growth from the first
half of the load to the second), then a burst beyond the queue's capacity, which must be answered 503 +
``Retry-After`` at once, never hang.

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
import threading
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
UPLOAD_TIMEOUT_S = 8.0
"""The server's --upload-timeout-s in this bench: the slow clients must be cut off at it."""


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident set (``VmRSS``) or its peak (``VmHWM``) of the process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    """Samples the server's RSS every ``period_s`` into ``(seconds since start, MiB)`` pairs until stopped."""

    def __init__(self, pid: int, period_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.period_s, self.samples = pid, period_s, []
        self.start_t = time.monotonic()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.period_s):
            try:
                self.samples.append((time.monotonic() - self.start_t, rss_mb(self.pid)))
            except OSError:
                return

    def between(self, t0: float, t1: float) -> list[float]:
        return [mb for t, mb in self.samples if t0 <= t <= t1]


class Job:
    """One request of the mix: a file, an optional subtitle, and its kind (for the per-kind latency)."""

    def __init__(self, kind: str, path: Path, subtitle: str | None = None) -> None:
        self.kind, self.path, self.subtitle = kind, path, subtitle


def post(client: httpx.Client, url: str, job: Job) -> tuple[str, int, float, str]:
    """(kind, status, seconds, label or error); status 0 = no answer (lost)."""
    t = time.perf_counter()
    try:
        with open(job.path, "rb") as f:
            data = {"subtitle": job.subtitle} if job.subtitle else {}
            r = client.post(f"{url}/v1/analyze", files={"file": (job.path.name, f)}, data=data)
        body = r.json()
        note = f" [{body['notes'][0][:40]}...]" if body.get("notes") else ""
        return job.kind, r.status_code, time.perf_counter() - t, (body.get("label") or body.get("error") or "-") + note
    except (httpx.HTTPError, ValueError) as e:
        return job.kind, 0, time.perf_counter() - t, f"{type(e).__name__}: {e}"


def slow_client(port: int, stop: threading.Event) -> tuple[int, float]:
    """Sends a request head and then one body byte every 0.5 s (bounded: 120 bytes) until the server answers; returns
    (status, seconds) — 408 at the upload deadline is the expected outcome."""
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="slow.txt"\r\n\r\n' + b"x" * 1000
    head = (f"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body) + 8}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n").encode()  # fmt: skip
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body[:60])
        sock.settimeout(0.5)
        for i in range(120):
            if stop.is_set():
                break
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except TimeoutError:
                pass
            except OSError:
                break
            try:
                sock.sendall(body[60 + i : 61 + i])
            except OSError:
                break
        sock.settimeout(10)
        try:
            first = sock.recv(64).split(b"\r\n", 1)[0].split()
        except OSError:
            first = []
    status = int(first[1]) if len(first) > 1 and first[1].isdigit() else 0
    return status, time.monotonic() - t


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def make_jobs(root: Path, speech: str, total: int) -> list[Job]:
    """The request mix: 3 s clips with speech (half), voice files with a subtitle, short text files, and the two
    long inputs (a 320 kB text file, a 61 kB subtitle) once each."""
    clips, voices, texts = [], [], []
    for i, text in enumerate(SENTENCES):
        clip = root / f"clip{i}.mp4"
        fixtures.make_face_clip(clip, "astronaut" if i % 2 == 0 else "grace_hopper", seconds=3.0, size=(480, 360),
                                audio=speech, text=text)  # fmt: skip
        clips.append(Job("clip", clip))
        wav = fixtures.make_audio_file(root / f"voice{i}.wav", speech, seconds=2.0, sample_rate=16000, text=text).path
        voices.append(Job("voice+subtitle", wav, subtitle=text))
        note = root / f"note{i}.txt"
        note.write_text(text + "\n")
        texts.append(Job("text", note))
    big = root / "long.txt"
    big.write_text("I am so happy today, this is wonderful news. " * 7200)  # 324 kB
    long_sub = ("I cannot believe you lied to me again. " * 1600)[:61_000]
    jobs = [Job("long text 320 kB", big), Job("subtitle 61 kB", voices[1].path, subtitle=long_sub)]
    cycle = [clips, voices, clips, texts]
    i = 0
    while len(jobs) < total:
        group = cycle[i % len(cycle)]
        jobs.append(group[(i // len(cycle)) % len(group)])
        i += 1
    return jobs[:total]


def start_server(port: int, root: Path, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "emollm.apps.serve.cli", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning", "--tmp-dir", str(root), *extra]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_up(server: subprocess.Popen, url: str, deadline: float) -> bool:
    while True:
        if server.poll() is not None:
            print(f"the server exited ({server.returncode}):\n{server.stderr.read()[-3000:]}")
            return False
        try:
            if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            print("the server did not start in time")
            return False
        time.sleep(0.2)


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(5)


def stop_check(root: Path, job: Job, deadline: float) -> tuple[bool, str]:
    """--timeout-s stops the work: the LLM rationale of a clip with speech, under a limit shorter than it takes.
    Measures the time to the 504 and from it until the worker is free again (/health: nothing running)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port, root, ["--reasoning", "llm", "--frames", "8", "--queue", "1"])
    try:
        if not wait_up(server, url, deadline):
            return False, "the server did not start"
        with httpx.Client(timeout=httpx.Timeout(630.0)) as client:
            post(client, url, job)  # loads every model
            full = post(client, url, job)  # the analysis' full length, warm
        stop_server(server)
        limit = max(1.0, round(full[2] / 3, 1))
        server = start_server(port, root, ["--reasoning", "llm", "--frames", "8", "--queue", "1",
                                           "--timeout-s", str(limit)])  # fmt: skip
        if not wait_up(server, url, deadline):
            return False, "the server did not start"
        with httpx.Client(timeout=httpx.Timeout(630.0)) as client:
            post(client, url, job)  # warm-up, may time out while models load
            for _ in range(600):  # bounded: 60 s for the warm-up job to leave
                if httpx.get(f"{url}/health", timeout=10).json()["pool"]["admitted"] == 0:
                    break
                time.sleep(0.1)
            cut = post(client, url, job)
            t = time.perf_counter()
            for _ in range(3000):  # bounded: 300 s
                if httpx.get(f"{url}/health", timeout=10).json()["pool"]["running"] == 0:
                    break
                time.sleep(0.05)
            freed = time.perf_counter() - t
            stopped = httpx.get(f"{url}/health", timeout=10).json()["pool"]["stopped"]
    finally:
        stop_server(server)
    message = (
        f"--timeout-s stops the work (LLM rationale, {job.path.name}): the warm analysis takes {full[2]:.1f} s; with "
        f"--timeout-s {limit:g} the answer was {cut[1]} after {cut[2]:.1f} s and the worker was free {freed:.2f} s "
        f"later ({stopped} job(s) stopped at their deadline)"
    )
    return cut[1] == 504 and freed < 5, message


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 clients, 12 requests, 1 slow client")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 8; --quick 4)")
    parser.add_argument("--requests", type=int, help="requests in all (default 40; --quick 12)")
    parser.add_argument("--slow", type=int, help="slow clients during the load (default 3; --quick 1)")
    parser.add_argument("--workers", type=int, default=1, help="server worker threads (one analyzer each)")
    parser.add_argument("--reasoning", default="template", choices=["llm", "template"], help="clue-mode rationale")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="bound of the whole run")
    parser.add_argument("--stop-check", action="store_true", help="also: --timeout-s stops an LLM rationale")
    args = parser.parse_args()
    clients = args.clients or (4 if args.quick else 8)
    total = args.requests or (12 if args.quick else 40)
    n_slow = args.slow if args.slow is not None else (1 if args.quick else 3)
    deadline = time.monotonic() + args.timeout_s
    speech = "speech" if shutil.which("espeak-ng") else "tone"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        jobs = make_jobs(root, speech, total)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        queue = clients  # capacity workers + queue >= clients: the load phase must never see a 503
        server = start_server(port, root, [
            "--workers", str(args.workers), "--queue", str(queue), "--reasoning", args.reasoning, "--frames", "8",
            "--timeout-s", "600", "--upload-timeout-s", str(UPLOAD_TIMEOUT_S), "--max-uploads",
            str(clients + n_slow + 2)])  # fmt: skip
        sampler = RssSampler(server.pid)
        try:
            if not wait_up(server, url, deadline):
                return 1
            with httpx.Client(timeout=httpx.Timeout(630.0)) as probe_client:
                sampler.start()
                cold = post(probe_client, url, jobs[2])  # a clip: loads the clue models
                warm = [post(probe_client, url, j) for j in (jobs[3], jobs[5])]  # voice + text models
            rss_idle = rss_mb(server.pid)

            limits = httpx.Limits(max_connections=clients * 3)
            halt = threading.Event()
            with httpx.Client(timeout=httpx.Timeout(630.0), limits=limits) as client:
                with ThreadPoolExecutor(n_slow or 1) as slow_pool:
                    slow = [slow_pool.submit(slow_client, port, halt) for _ in range(n_slow)]
                    t_load = time.monotonic() - sampler.start_t
                    t = time.perf_counter()
                    with ThreadPoolExecutor(clients) as pool:
                        results = list(pool.map(lambda j: post(client, url, j), jobs))
                    wall = time.perf_counter() - t
                    t_end = time.monotonic() - sampler.start_t
                    halt.set()
                    slow_results = [f.result(60) for f in slow]
                burst_n = 2 * (args.workers + queue)
                t = time.perf_counter()
                with ThreadPoolExecutor(burst_n) as pool:
                    burst = list(pool.map(lambda i: post(client, url, jobs[2 + i % 4]), range(burst_n)))
                burst_wall = time.perf_counter() - t
            rss_peak = rss_mb(server.pid, "VmHWM")
            health = httpx.get(f"{url}/health", timeout=30).json()["pool"]
        finally:
            sampler.halt.set()
            stop_server(server)
        stopped_ok, stop_message = stop_check(root, jobs[2], deadline) if args.stop_check else (True, "")

    ok = [r for r in results if r[1] == 200]
    failed = [r for r in results if r[1] not in (0, 200)]
    lost = [r for r in results if r[1] == 0]
    print(f"emollm serve, clue mode ({args.reasoning} rationale), {args.workers} worker(s), queue {queue}, "
          f"--upload-timeout-s {UPLOAD_TIMEOUT_S:g}; {clients} clients, {total} requests mixing 3 s 480x360 clips "
          f"with {speech}, 2 s voice files with a subtitle, text files and two long inputs; {n_slow} slow clients "
          "(1 byte / 0.5 s) during the load\n")  # fmt: skip
    rows = [["cold (1st clip)", "1", "1", str(int(cold[1] == 200)), str(int(cold[1] not in (0, 200))),
             str(int(cold[1] == 0)), f"{cold[2]:.2f}", "-", "-", "-"]]  # fmt: skip
    lat = [r[2] for r in ok] or [float("nan")]
    rows.append(["load (all kinds)", str(clients), str(total), str(len(ok)), str(len(failed)), str(len(lost)),
                 f"{pct(lat, 50):.2f}", f"{pct(lat, 95):.2f}", f"{max(lat):.2f}", f"{len(ok) / wall:.2f}"])  # fmt: skip
    for kind in dict.fromkeys(r[0] for r in results):
        mine = [r for r in results if r[0] == kind]
        k_lat = [r[2] for r in mine if r[1] == 200] or [float("nan")]
        rows.append([f"  {kind}", "", str(len(mine)), str(sum(r[1] == 200 for r in mine)),
                     str(sum(r[1] not in (0, 200) for r in mine)), str(sum(r[1] == 0 for r in mine)),
                     f"{pct(k_lat, 50):.2f}", f"{pct(k_lat, 95):.2f}", f"{max(k_lat):.2f}", ""])  # fmt: skip
    print(table(["phase", "clients", "requests", "ok", "failed", "lost", "p50 s", "p95 s", "max s", "req/s"], rows))
    load_rss = sampler.between(t_load, t_end)
    half = t_load + (t_end - t_load) / 2
    first, second = sampler.between(t_load, half) or [float("nan")], sampler.between(half, t_end) or [float("nan")]
    growth = max(second) - max(first)
    print(f"\nserver RSS (MiB, {len(sampler.samples)} samples every 0.25 s): after warm-up {rss_idle:.0f}; during "
          f"the load min {min(load_rss or [0]):.0f}, max {max(load_rss or [0]):.0f} (first half max {max(first):.0f}, "
          f"second half max {max(second):.0f}: {growth:+.0f}); peak of the run (VmHWM) {rss_peak:.0f}")  # fmt: skip
    print(f"slow clients: {[s for s, _ in slow_results]} after {', '.join(f'{sec:.1f} s' for _, sec in slow_results)} "
          f"(--upload-timeout-s {UPLOAD_TIMEOUT_S:g})")  # fmt: skip
    for kind in ("long text 320 kB", "subtitle 61 kB"):
        r = next((r for r in results if r[0] == kind), None)
        if r is not None:
            print(f"{kind}: {r[1]} in {r[2]:.2f} s, {r[3]}")
    busy = [sec for _, s, sec, _ in burst if s == 503]
    print(f"burst of {len(burst)} at once (capacity {args.workers + queue}): "
          f"{sum(s == 200 for _, s, _, _ in burst)} answered 200, {len(busy)} answered 503 "
          f"(slowest 503 in {max(busy, default=0):.2f} s), {sum(s == 0 for _, s, _, _ in burst)} lost, "
          f"{sum(s not in (0, 200, 503) for _, s, _, _ in burst)} other; burst done in {burst_wall:.1f} s")  # fmt: skip
    print(f"after the run: {health['admitted']} admitted, {health['uploading']} uploading, {health['stopped']} stopped")
    bad = [(s, m) for _, s, _, m in failed + lost] + [(s, m) for _, s, _, m in burst if s not in (200, 503)]
    bad += [(s, "slow client not cut at the upload deadline") for s, _ in slow_results if s != 408]
    bad += [(w[1], w[3]) for w in warm if w[1] != 200]
    for status, msg in bad[:5]:
        print(f"  FAILED {status}: {msg}")
    if stop_message:
        print(stop_message)
    if not stopped_ok:
        bad.append((504, "--timeout-s did not stop the work"))
    return 0 if not bad and cold[1] == 200 else 1


if __name__ == "__main__":
    raise SystemExit(main())
