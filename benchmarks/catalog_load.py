"""Print how long a full catalog read takes over HTTP, and the peak memory it needs."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3

from mesh.catalog import GlueCatalog
from mesh.demo import data, standin

TARGET_DEMO_S, TARGET_BIG_S, TARGET_RSS_MB = 1.0, 10.0, 400
BIG_DATABASES, BIG_TABLES = 200, 10


def _glue(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "glue",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )


def _timed_snapshot(catalog: GlueCatalog) -> tuple[float, int]:
    start = time.perf_counter()
    snapshot = catalog.snapshot()
    return time.perf_counter() - start, sum(len(t) for t in snapshot.tables.values())


def _seed_big(glue) -> None:  # type: ignore[no-untyped-def]
    columns = [
        {
            "Name": f"col_{i}",
            "Type": "string",
            "Parameters": {"pii_flag": "true" if i == 3 else "false"},
        }
        for i in range(12)
    ]
    for d in range(BIG_DATABASES):
        name = f"bench_db_{d:04d}"
        glue.create_database(
            DatabaseInput={
                "Name": name,
                "Parameters": {"data_owner": "111111111111", "data_owner_name": "Bench"},
            }
        )
        for t in range(BIG_TABLES):
            glue.create_table(
                DatabaseName=name,
                TableInput={"Name": f"t_{t:03d}", "StorageDescriptor": {"Columns": columns}},
            )


def main() -> int:
    server, endpoint = standin.serve()
    glue = _glue(endpoint)
    data.seed(glue)
    catalog = GlueCatalog(glue, catalog_id="123456789012")
    demo_s, demo_tables = _timed_snapshot(catalog)
    print(f"demo catalog: {demo_tables} tables read in {demo_s:.3f} s (target < {TARGET_DEMO_S} s)")
    start = time.perf_counter()
    _seed_big(glue)
    print(f"seeded {BIG_DATABASES * BIG_TABLES} more tables in {time.perf_counter() - start:.1f} s")
    big_s, big_tables = _timed_snapshot(catalog)
    print(
        f"large catalog: {big_tables} tables in {BIG_DATABASES + 10} databases read in "
        f"{big_s:.2f} s (target < {TARGET_BIG_S} s)"
    )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"peak RSS of this process (moto server included): {rss_mb:.0f} MB "
        f"(target < {TARGET_RSS_MB} MB)"
    )
    server.stop()
    ok = demo_s < TARGET_DEMO_S and big_s < TARGET_BIG_S and rss_mb < TARGET_RSS_MB
    print("all targets met" if ok else "A TARGET WAS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
