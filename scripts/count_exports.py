"""Counts a local run's exports independently of the project's code.

Reads every object of the run's destination bucket and its errors/, and
every archive part its manifests commit (a whole object, or a byte range
of a bundle: the small parts of the partitions one flush wrote together),
back from moto with boto3, gunzips them with the standard library,
and prints events sent (from the run's own "sent" line), exported (in the
destination), archived, duplicates (an audit event's EVENT_ID, or an app
event's whole line, seen twice), rejected, and what is left under staging/
(staged objects and older chunks). Exits 1 when the destination or the
archive does not hold each sent event exactly once, when the rejected
records are not all in errors/, or when anything is left staged.
"""

import argparse
import gzip
import json
import re
import sys

import boto3


def keys_under(s3, bucket, prefix=""):
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield item["Key"]


def lines_under(s3, bucket, prefix=""):
    for key in keys_under(s3, bucket, prefix):
        if "airkit-verify-test-" in key:
            continue
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        for line in gzip.decompress(body).decode("utf-8").splitlines():
            if line:
                yield line


def archived_lines(s3, bucket):
    """The lines of every committed archive part, read where its manifest
    says it is; a bundle of a run that stopped before committing is no part
    of the archive."""
    for key in keys_under(s3, bucket, "manifests/"):
        if not key.endswith(".json"):
            continue
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        for part in manifest["parts"]:
            request = {"Bucket": bucket, "Key": part["key"]}
            if "offset" in part:
                if part["bytes"] == 0:
                    continue
                end = part["offset"] + part["bytes"] - 1
                request["Range"] = f"bytes={part['offset']}-{end}"
            body = s3.get_object(**request)["Body"].read()
            for line in gzip.decompress(body).decode("utf-8").splitlines():
                if line:
                    yield line


def identity(line):
    event = json.loads(line)
    return event.get("EVENT_ID") or line


def count(lines):
    seen = set()
    total = duplicates = 0
    for line in lines:
        total += 1
        key = identity(line)
        if key in seen:
            duplicates += 1
        seen.add(key)
    return total, duplicates


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--local-log", required=True, help="the output of s3-export local")
    args = parser.parse_args()

    with open(args.local_log, encoding="utf-8") as log:
        text = log.read()
    sent = re.search(r"^sent\s+\d+ messages: (\d+) events .*?, (\d+) malformed", text, re.M)
    if not sent:
        print("the local run printed no 'sent' line; it did not finish", file=sys.stderr)
        return 1
    sent_events, sent_malformed = int(sent.group(1)), int(sent.group(2))

    s3 = boto3.client("s3", endpoint_url=args.endpoint)
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    export = next(b for b in buckets if b.startswith("s3-export-local-") and not b.endswith("-destination"))
    destination = export + "-destination"

    exported, duplicates = count(lines_under(s3, destination))
    archived, archive_duplicates = count(archived_lines(s3, export))
    rejected = sum(1 for _ in lines_under(s3, export, "errors/"))
    # Staged objects (`.staged`, zstd segments with an index) and the older
    # gzip chunks (`.ndjson.gz`): a finished run leaves neither.
    left = list(keys_under(s3, export, "staging/"))
    staged_objects = sum(1 for key in left if key.endswith(".staged"))
    staged_chunks = sum(1 for key in left if key.endswith(".ndjson.gz"))

    print(f"sent          {sent_events} events, {sent_malformed} malformed records")
    print(f"exported      {exported} events in s3://{destination}/ ({exported - duplicates} distinct)")
    print(f"archived      {archived} events under s3://{export}/archive/")
    print(f"duplicates    {duplicates} in the destination, {archive_duplicates} in the archive")
    print(f"rejected      {rejected} records under errors/")
    print(f"left staged   {staged_objects} staged objects, {staged_chunks} chunks, {len(left) - staged_objects - staged_chunks} other objects")
    ok = (
        exported == sent_events
        and archived == sent_events
        and duplicates == 0
        and archive_duplicates == 0
        and rejected == sent_malformed
        and not left
    )
    print("OK: counted independently, each sent event exactly once" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
