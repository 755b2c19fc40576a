#!/usr/bin/env python3
"""Runs the examples of README.md and of every document in docs/ against a
real server and fails on any difference from the output a document shows.

Every ```sh block whose first line starts with `grpcurl`, `buf curl` or
`segmentd` (the binary under test) is run with bash, and the fenced block
right after it is its expected output (stdout, then stderr). Each document
gets a fresh server and runs its examples in order, so an example may build
on the data of the examples above it in the same document, and on nothing
else. Times, etags and the cursors of watches differ from run to run and
are masked on both sides.
With --update, the documents' outputs are rewritten instead.

A document that starts with `<!-- doc-server: tls -->` gets a TLS server:
a throwaway CA and server certificate (for localhost and 127.0.0.1) are
made with openssl, and its examples run in a directory that holds the CA
as `ca.pem`, with the server's plaintext health listener at
localhost:50052.

Usage: doc_examples.py BINARY [--update] [DOCUMENT...]

Without DOCUMENT, README.md and docs/*.md are run, those without examples
skipped.
"""

import glob
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\n", re.S | re.M)
VOLATILE = re.compile(r'"(createTime|updateTime|etag|nextPageToken|fitTime|fitDuration)": "[^"]*"')
# A watch message's evaluation time and cursor, as grpcurl prints them.
WATCH_POSITION = re.compile(r'"evaluationTime": "[^"]*",(\s*)"cursor": "[^"]*"')
# The evaluation time that starts a line of `segmentd watch`.
WATCH_LINE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ(?=  )", re.M)
# The cursor of the command that resumes a watch.
RESUME_CURSOR = re.compile(r"--cursor \S+")
# The address the examples are written for.
DOCUMENTED_ADDRESS = re.compile(r"\b(localhost|127\.0\.0\.1):50051\b")
# The address of the health listener in the examples of a TLS server.
DOCUMENTED_HEALTH_ADDRESS = re.compile(r"\b(localhost|127\.0\.0\.1):50052\b")
# How a document asks for a server other than the plaintext default.
DOC_SERVER = re.compile(r"\A<!-- doc-server: (\w+) -->")
# Extensions of the throwaway server certificate.
SERVER_EXTENSIONS = """subjectAltName = DNS:localhost, IP:127.0.0.1
extendedKeyUsage = serverAuth
basicConstraints = CA:FALSE
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def normalise(text):
    text = VOLATILE.sub(r'"\1": "…"', text)
    text = WATCH_POSITION.sub(r'"evaluationTime": "…",\1"cursor": "…"', text)
    text = RESUME_CURSOR.sub("--cursor …", WATCH_LINE_TIME.sub("…", text))
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return "\n".join(lines)


def examples(document, text):
    """(command block match, output block match) pairs, in order."""
    blocks = list(FENCE.finditer(text))
    pairs = []
    for i, block in enumerate(blocks):
        info, body = block.group(1).strip(), block.group(2)
        if info == "sh" and body.startswith(("grpcurl", "buf curl", "segmentd ")):
            if i + 1 >= len(blocks):
                sys.exit(f"{document}: example without an output block: {body.splitlines()[0]}")
            pairs.append((block, blocks[i + 1]))
    return pairs


def script_of(command, binary, server):
    """The example as bash runs it: against this server, with this binary."""
    script = DOCUMENTED_ADDRESS.sub(f"127.0.0.1:{server.port}", command)
    if server.health_port:
        script = DOCUMENTED_HEALTH_ADDRESS.sub(f"127.0.0.1:{server.health_port}", script)
    # The binary under test, wherever a line of the example starts with it.
    return re.sub(r"^segmentd ", lambda _: shlex.quote(binary) + " ", script, flags=re.M)


def make_certificates(directory):
    """A throwaway CA (ca.pem) and a server certificate it signed
    (server.pem, server.key) in `directory`."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=segmentd docs CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    with open(os.path.join(directory, "server.ext"), "w") as extensions:
        extensions.write(SERVER_EXTENSIONS)
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "server.ext", "-out", "server.pem")


class Server:
    """segmentd on a free port and a fresh data directory; with TLS and a
    health listener when `tls`, its CA in `workdir`."""

    def __init__(self, binary, tls=False):
        self.binary = binary
        self.port = free_port()
        self.health_port = None
        data_dir = tempfile.mkdtemp(prefix="segmentd-docs-")
        self.workdir = None
        flags = []
        if tls:
            self.workdir = os.path.join(data_dir, "work")
            os.mkdir(self.workdir)
            make_certificates(data_dir)
            os.rename(os.path.join(data_dir, "ca.pem"), os.path.join(self.workdir, "ca.pem"))
            self.health_port = free_port()
            flags = ["--tls-cert", os.path.join(data_dir, "server.pem"),
                     "--tls-key", os.path.join(data_dir, "server.key"),
                     "--health-listen", f"127.0.0.1:{self.health_port}"]
        self.log = open(os.path.join(data_dir, "server.log"), "w+")
        self.process = subprocess.Popen(
            # The examples fit the prediction model as of the times they
            # show: a background fit as of now would replace it at a moment
            # of its own.
            [binary, "serve", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", os.path.join(data_dir, "db"), "--log-format", "json",
             "--prediction-check-every", "24h", *flags],
            stdout=self.log, stderr=self.log)

    def wait_serving(self):
        tls = ["--tls-ca", os.path.join(self.workdir, "ca.pem")] if self.workdir else []
        for _ in range(300):
            check = subprocess.run([self.binary, "healthcheck", "--addr", f"127.0.0.1:{self.port}",
                                    *tls], capture_output=True)
            if check.returncode == 0:
                return
            time.sleep(0.1)
        sys.exit("the server never reported SERVING")

    def stop(self):
        """Sends SIGTERM; fails unless the server flushed and exited 0."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.log.seek(0)
        server_log = self.log.read()
        if code != 0 or '"store flushed"' not in server_log:
            print(server_log)
            sys.exit(f"the server did not shut down cleanly on SIGTERM (exit code {code})")


def run_document(document, binary, update):
    """Runs one document's examples on a server of its own; returns
    (examples, failures, updated)."""
    path = os.path.join(ROOT, document)
    text = open(path, encoding="utf-8").read()
    pairs = examples(document, text)
    if not pairs:
        return 0, 0, 0
    print(f"--- {document}")
    kind = DOC_SERVER.match(text)
    if kind and kind.group(1) != "tls":
        sys.exit(f"{document}: unknown doc-server {kind.group(1)!r}")
    server = Server(binary, tls=bool(kind))
    failures, replacements = 0, []
    try:
        server.wait_serving()
        for command, expected in pairs:
            script = script_of(command.group(2), binary, server)
            run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                                 cwd=server.workdir)
            actual = (run.stdout + run.stderr).strip() + "\n"
            title = command.group(2).splitlines()[0][:100]
            if normalise(actual) == normalise(expected.group(2)):
                print(f"ok      {title}")
            elif update:
                print(f"updated {title}")
                replacements.append((expected.start(2), expected.end(2), actual))
            else:
                failures += 1
                print(f"FAILED  {title}\n--- expected\n{expected.group(2)}--- actual\n{actual}")
    finally:
        server.stop()
    if update and replacements:
        for start, end, output in reversed(replacements):
            text = text[:start] + output + text[end:]
        open(path, "w", encoding="utf-8").write(text)
    return len(pairs), failures, len(replacements)


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    binary, update = os.path.abspath(args[0]), "--update" in args[1:]
    documents = [arg for arg in args[1:] if arg != "--update"]
    if not documents:
        documents = ["README.md"] + sorted(
            os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "docs", "*.md")))
    total = failed = updated = 0
    for document in documents:
        count, failures, replaced = run_document(document, binary, update)
        total, failed, updated = total + count, failed + failures, updated + replaced
    if update:
        print(f"{updated} of {total} outputs updated")
    else:
        print(f"{total - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
