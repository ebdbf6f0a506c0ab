#!/usr/bin/env python3
"""A small in-memory S3 server that checks every request's AWS Signature V4
with botocore (Debian's python3-botocore), an implementation independent of
libcurl's CURLOPT_AWS_SIGV4 that common/remote_storage.c signs with; then
runs a command against it.

    python3 sigv4_s3.py CMD ARGS...

CMD runs with ARBOR_S3_URL=s3://arbor-sig/<prefix>?endpoint=http://127.0.0.1:
PORT&region=eu-test-1 and credentials in AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY. The server answers what remote_storage uses
(PutObject, GetObject with Range, DeleteObject, ListObjectsV2 with
pagination, DeleteObjects, multipart upload) like S3, and refuses a request
whose signature, x-amz-content-sha256 or Content-MD5 does not match with 403
SignatureDoesNotMatch / 400 BadDigest, as S3 does. Exit status: CMD's, or 1
when any request was refused although CMD passed; 77 (skipped) without
botocore. Loopback only; stops with CMD; a watchdog bounds the run.
"""
import base64
import hashlib
import os
import re
import secrets
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

try:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
except ImportError:
    print("SKIP: python3-botocore is not installed (scripts/deps.sh installs it)")
    sys.exit(77)

BUCKET = "arbor-sig"
REGION = "eu-test-1"
ACCESS_KEY = "AKIDARBORTEST"
SECRET_KEY = "arbor/secret+key=with/odd+chars"
MAX_KEYS = 1000

objects = {}       # key -> bytes
uploads = {}       # upload id -> {part number: bytes}
lock = threading.Lock()
stats = {"verified": 0, "refused": 0}
AUTH_RE = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/s3/aws4_request, "
                     r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")


def check_signature(handler, body):
    """None if the request is signed right, else the reason."""
    m = AUTH_RE.match(handler.headers.get("Authorization", ""))
    if not m:
        return "no or malformed Authorization header"
    key_id, day, region, signed, signature = m.groups()
    if key_id != ACCESS_KEY or region != REGION:
        return "wrong credential scope"
    amz_date = handler.headers.get("x-amz-date", "")
    if not amz_date.startswith(day):
        return "x-amz-date does not match the credential's date"
    if handler.headers.get("x-amz-content-sha256") != hashlib.sha256(body).hexdigest():
        return "x-amz-content-sha256 is not the body's SHA-256"
    headers = {}
    for name in signed.split(";"):
        value = handler.headers.get(name)
        if value is None:
            return f"signed header {name} is missing (SignedHeaders={signed})"
        headers[name] = value
    req = AWSRequest(method=handler.command, url="http://" + handler.headers["Host"] + handler.path,
                     headers=headers, data=body)
    req.context["timestamp"] = amz_date
    signer = S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION)
    canonical = signer.canonical_request(req)
    want = signer.signature(signer.string_to_sign(req, canonical), req)
    if want != signature:
        return f"signature mismatch; botocore's canonical request:\n{canonical}"
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status, code, message):
        self.reply(status, f"<?xml version=\"1.0\"?><Error><Code>{code}</Code>"
                   f"<Message>{escape(message)}</Message></Error>".encode(),
                   {"Content-Type": "application/xml"})

    def handle_any(self):
        n = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(n) if n else b""
        why = check_signature(self, body)
        if why:
            with lock:
                stats["refused"] += 1
            sys.stderr.write(f"[sigv4-s3] REFUSED {self.command} {self.path}: {why}\n")
            return self.error(403, "SignatureDoesNotMatch", why)
        md5 = self.headers.get("Content-MD5")
        if md5 is not None and md5 != base64.b64encode(hashlib.md5(body).digest()).decode():
            return self.error(400, "BadDigest", "Content-MD5 does not match the body")
        with lock:
            stats["verified"] += 1
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        parts = url.path.split("/", 2)
        if len(parts) < 2 or parts[1] != BUCKET:
            return self.error(404, "NoSuchBucket", "no such bucket")
        key = urllib.parse.unquote(parts[2]) if len(parts) > 2 and parts[2] else None
        with lock:
            return self.route(key, q, body)

    def route(self, key, q, body):
        c = self.command
        if key is None:
            if c == "GET" and q.get("list-type") == "2":
                return self.list_v2(q)
            if c == "POST" and "delete" in q:
                for k in re.findall(r"<Key>(.*?)</Key>", body.decode()):
                    objects.pop(k.replace("&lt;", "<").replace("&gt;", ">")
                                 .replace("&quot;", "\"").replace("&apos;", "'")
                                 .replace("&amp;", "&"), None)
                return self.reply(200, b"<?xml version=\"1.0\"?><DeleteResult/>")
            return self.error(400, "InvalidRequest", "unsupported bucket request")
        if c == "PUT" and "uploadId" in q:
            if q["uploadId"] not in uploads:
                return self.error(404, "NoSuchUpload", "no such upload")
            uploads[q["uploadId"]][int(q["partNumber"])] = body
            return self.reply(200, b"", {"ETag": '"%s"' % hashlib.md5(body).hexdigest()})
        if c == "PUT":
            objects[key] = body
            return self.reply(200, b"", {"ETag": '"%s"' % hashlib.md5(body).hexdigest()})
        if c == "POST" and "uploads" in q:
            uid = secrets.token_hex(8)
            uploads[uid] = {}
            return self.reply(200, ("<?xml version=\"1.0\"?><InitiateMultipartUploadResult>"
                                    f"<Bucket>{BUCKET}</Bucket><Key>{escape(key)}</Key>"
                                    f"<UploadId>{uid}</UploadId>"
                                    "</InitiateMultipartUploadResult>").encode())
        if c == "POST" and "uploadId" in q:
            got = uploads.pop(q["uploadId"], None)
            if got is None:
                return self.error(404, "NoSuchUpload", "no such upload")
            nums = [int(x) for x in re.findall(r"<PartNumber>(\d+)</PartNumber>", body.decode())]
            objects[key] = b"".join(got[i] for i in nums)
            return self.reply(200, ("<?xml version=\"1.0\"?><CompleteMultipartUploadResult>"
                                    f"<Key>{escape(key)}</Key><ETag>\"x\"</ETag>"
                                    "</CompleteMultipartUploadResult>").encode())
        if c == "DELETE":
            if "uploadId" in q:
                uploads.pop(q["uploadId"], None)
            else:
                objects.pop(key, None)
            return self.reply(204)
        if c in ("GET", "HEAD"):
            if key not in objects:
                return self.error(404, "NoSuchKey", "no such key")
            data = objects[key]
            rng = self.headers.get("Range")
            if rng:
                m = re.match(r"bytes=(\d+)-(\d*)$", rng)
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else len(data) - 1
                if start >= len(data):
                    return self.error(416, "InvalidRange", "range not satisfiable")
                end = min(end, len(data) - 1)
                return self.reply(206, data[start:end + 1],
                                  {"Content-Range": f"bytes {start}-{end}/{len(data)}"})
            return self.reply(200, data)
        return self.error(400, "InvalidRequest", "unsupported request")

    def list_v2(self, q):
        prefix = q.get("prefix", "")
        after = q.get("continuation-token", q.get("start-after", ""))
        keys = sorted(k for k in objects if k.startswith(prefix) and k > after)
        page, truncated = keys[:MAX_KEYS], len(keys) > MAX_KEYS
        out = ["<?xml version=\"1.0\"?><ListBucketResult>",
               f"<Name>{BUCKET}</Name><Prefix>{escape(prefix)}</Prefix>",
               f"<KeyCount>{len(page)}</KeyCount><IsTruncated>{str(truncated).lower()}</IsTruncated>"]
        if truncated:
            out.append(f"<NextContinuationToken>{escape(page[-1])}</NextContinuationToken>")
        for k in page:
            out.append(f"<Contents><Key>{escape(k)}</Key><Size>{len(objects[k])}</Size></Contents>")
        out.append("</ListBucketResult>")
        return self.reply(200, "".join(out).encode(), {"Content-Type": "application/xml"})

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{srv.server_address[1]}"
    env = dict(os.environ,
               ARBOR_S3_URL=f"s3://{BUCKET}/sig-{secrets.token_hex(4)}/?endpoint={endpoint}"
                            f"&region={REGION}",
               ARBOR_S3_ENDPOINT=endpoint,
               AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    try:
        rc = subprocess.run(sys.argv[1:], env=env, timeout=int(os.environ.get(
            "SIGV4_WATCHDOG_S", "300"))).returncode
    except subprocess.TimeoutExpired:
        print("[sigv4-s3] the command ran too long")
        rc = 1
    srv.shutdown()
    print(f"[sigv4-s3] requests whose signature botocore verified: {stats['verified']}, "
          f"refused: {stats['refused']}")
    if rc == 0 and stats["refused"]:
        rc = 1
    if rc == 0 and stats["verified"] == 0:
        print("[sigv4-s3] the command sent no request")
        rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
