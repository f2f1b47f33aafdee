"""Per-row cost of masking: what keyed tokens add to each stored event, in both modes.

A row costs normalise_ip + two tokens (ip and device_id). Plain SHA-256 is measured beside
them for scale, and to show why it is no masking: at that speed one core hashes every IPv4
address in minutes.

    python benchmarks/masking.py [--rows 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

from login_etl.masking import Masker, normalise_ip
from login_etl.settings import MaskingKey


def rows(n: int, seed: int = 7) -> list[tuple[str, str]]:
    """(ip, device_id) pairs shaped like the sample: IPv4 mostly, some IPv6, ddd-dd-dddd ids."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 10 == 0:
            ip = ":".join(f"{rng.randrange(65536):x}" for _ in range(8))
        else:
            ip = ".".join(str(rng.randrange(256)) for _ in range(4))
        out.append((ip, f"{rng.randrange(1000):03d}-{rng.randrange(100):02d}-{rng.randrange(10000):04d}"))
    return out


def per_row_seconds(work: Callable[[str, str], object], data: list[tuple[str, str]],
                    repeat: int) -> float:
    """Best of `repeat` passes, per row: the floor, as timeit reports it (noise only adds)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for ip, device_id in data:
            work(ip, device_id)
        times.append((time.perf_counter() - start) / len(data))
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()

    data = rows(args.rows)
    key = [MaskingKey("bench", os.urandom(32))]
    hmac_masker, siv_masker = Masker(key, "hmac"), Masker(key, "siv")

    normalised = [(normalise_ip(ip) or "", device_id.strip()) for ip, device_id in data]

    def prepare(ip: str, device_id: str) -> object:
        return normalise_ip(ip), device_id.strip()

    def sha256(ip: str, device_id: str) -> object:
        return hashlib.sha256(ip.encode()).digest(), hashlib.sha256(device_id.encode()).digest()

    def tokens(masker: Masker) -> Callable[[str, str], object]:
        def work(ip: str, device_id: str) -> object:
            return masker.mask("ip", ip), masker.mask("device_id", device_id)
        return work

    def full_row(masker: Masker) -> Callable[[str, str], object]:
        def work(ip: str, device_id: str) -> object:
            return (masker.mask("ip", normalise_ip(ip) or ""),
                    masker.mask("device_id", device_id.strip()))
        return work

    cases: dict[str, tuple[Callable[[str, str], object], list[tuple[str, str]]]] = {
        "normalise ip + trim device_id": (prepare, data),
        "2 tokens, hmac": (tokens(hmac_masker), normalised),
        "2 tokens, siv": (tokens(siv_masker), normalised),
        "whole masking step, hmac (default)": (full_row(hmac_masker), data),
        "whole masking step, siv": (full_row(siv_masker), data),
        "2 plain SHA-256 (reference only)": (sha256, normalised),
    }
    cases["1 plain SHA-256 of an ip"] = (lambda ip, _d: hashlib.sha256(ip.encode()).digest(),
                                         normalised)
    # Interleaved rounds, best per case: a burst of load from a neighbour hits one round of
    # every case instead of all rounds of one case.
    results = {name: float("inf") for name in cases}
    for _ in range(args.repeat):
        for name, (work, rows_) in cases.items():
            results[name] = min(results[name], per_row_seconds(work, rows_, 1))
    one_sha = results.pop("1 plain SHA-256 of an ip")

    print(f"masking cost per row (ip + device_id), {args.rows} rows x {args.repeat}, best of passes; "
          f"Python {platform.python_version()}, {platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'case':38} {'us/row':>8} {'rows/s':>12}")
    for name, seconds in results.items():
        print(f"{name:38} {seconds * 1e6:8.2f} {1 / seconds:12,.0f}")
    minutes = 2**32 * one_sha / 60
    print(f"\nunkeyed SHA-256 of one ip: {one_sha * 1e6:.2f} us -> all 2^32 IPv4 addresses in "
          f"{minutes:.0f} min on one core from Python; native code on a few cores takes minutes, "
          "a GPU cracker about a second (estimate)")
    if args.json:
        print(json.dumps({"rows": args.rows, "us_per_row": {k: round(v * 1e6, 3)
                                                           for k, v in results.items()},
                          "ipv4_space_sha256_minutes": round(minutes, 1)}))


if __name__ == "__main__":
    main()
