"""Run folders to and from an S3-compatible bucket, with MinIO's client (`minio`: any S3 API, AWS or not).

A Kubernetes Job whose target sets `kubernetes.results_s3` ends with `harness push-results`, and
`harness fleet collect --kubernetes` pulls the folders back. Credentials come from the environment as the AWS
tools name them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN and AWS_REGION); the Job
takes them from the Secret the target names. Nothing already on disk is overwritten: a pulled file that exists
with other bytes stops the pull, naming it.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from harness.errors import UserError
from harness.results import copy_new

# bucket names as S3 accepts them (3-63 lowercase letters, digits, '.', '-'), then an optional key prefix
_URL = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/[^\s]*)?$")
ENDPOINT_ENV = "PTQ_HARNESS_S3_ENDPOINT"
DEFAULT_ENDPOINT = "https://s3.amazonaws.com"


def url_ok(url: str) -> bool:
    return bool(_URL.match(url))


def endpoint_ok(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.path in ("", "/")


def split(url: str) -> tuple[str, str]:
    """s3://bucket/a/b -> ('bucket', 'a/b')."""
    m = _URL.match(url)
    if not m:
        raise UserError(f"{url!r}: expected s3://bucket[/prefix] (a lowercase bucket name, 3-63 characters)")
    return m.group(1), (m.group(2) or "").strip("/")


def add_parser(sub) -> None:
    p = sub.add_parser("push-results", help="upload a run folder to an S3-compatible bucket (a Job's last step)")
    p.add_argument("run_dir", help="the run folder")
    p.add_argument("url", help="s3://bucket/prefix: the folder's files go under it, by their relative paths")
    p.add_argument("--endpoint", help=f"the S3 API's URL (default ${ENDPOINT_ENV}, else {DEFAULT_ENDPOINT})")


def client(endpoint: str | None = None):
    from minio import Minio

    endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT
    if not endpoint_ok(endpoint):
        raise UserError(f"S3 endpoint {endpoint!r}: expected http(s)://host[:port]")
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        raise UserError("S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set (a Job takes them from the "
                        "Secret named by kubernetes.s3_secret)")
    parts = urlsplit(endpoint)
    return Minio(parts.netloc, access_key=key, secret_key=secret, session_token=os.environ.get("AWS_SESSION_TOKEN"),
                 secure=parts.scheme == "https", region=os.environ.get("AWS_REGION"))


@contextmanager
def _s3_errors(what: str):
    """The client's errors (a refused key, a missing bucket, no route to the endpoint) as one line."""
    from minio.error import MinioException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except (MinioException, HTTPError) as exc:
        raise UserError(f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None


def push(run_dir: Path, url: str, endpoint: str | None = None, say=print) -> int:
    """Upload every file under run_dir to url/<relative path>; returns the number of files."""
    bucket, prefix = split(url)
    if not (run_dir / "run.json").is_file():
        raise UserError(f"{run_dir}: not a run folder (no run.json)")
    s3 = client(endpoint)
    files = sorted(p for p in run_dir.rglob("*") if p.is_file())
    for i, path in enumerate(files, 1):
        key = "/".join(filter(None, [prefix, path.relative_to(run_dir).as_posix()]))
        with _s3_errors(f"push-results s3://{bucket}/{key}"):
            s3.fput_object(bucket, key, str(path))
        if i % 50 == 0 or i == len(files):
            say(f"push-results: {i}/{len(files)} files to s3://{bucket}/{prefix}")
    return len(files)


def pull(url: str, dest: Path, endpoint: str | None = None, say=print) -> int:
    """Download every object under url into dest by its key below the prefix; an existing file with other
    bytes stops the pull (one line naming it), an identical one is kept. Returns the files written."""
    bucket, prefix = split(url)
    s3 = client(endpoint)
    base = f"{prefix}/" if prefix else ""
    with _s3_errors(f"s3://{bucket}/{base}"):
        keys = [o.object_name for o in s3.list_objects(bucket, prefix=base, recursive=True)]
    # a key ending in '/' is a "folder" some tools create: nothing to write
    rels = [(k, k[len(base):]) for k in keys if not k.endswith("/")]
    if not rels:
        raise UserError(f"s3://{bucket}/{base}: no objects there; did the Job run and push its results?")
    written = 0
    for key, rel in rels:
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise UserError(f"s3://{bucket}/{key}: a key that leaves {dest}; not pulled")
        written += _pull_one(s3, bucket, key, dest / rel)
    say(f"pulled {written} files from s3://{bucket}/{prefix} into {dest} ({len(rels) - written} already there)")
    return written


def _pull_one(s3, bucket: str, key: str, path: Path) -> int:
    """1 if written, 0 if an identical file was there (results.copy_new: never over an existing file)."""
    def fill(f) -> None:
        with _s3_errors(f"s3://{bucket}/{key}"):
            resp = s3.get_object(bucket, key)
            try:
                for chunk in resp.stream(1 << 20):
                    f.write(chunk)
            finally:
                resp.close()
                resp.release_conn()

    return copy_new(path, fill, f"s3://{bucket}/{key}")


def cmd_push_results(args) -> int:
    n = push(Path(args.run_dir), args.url, args.endpoint)
    print(f"push-results: {n} files of {args.run_dir} in {args.url}")
    return 0
