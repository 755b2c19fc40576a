#!/usr/bin/env python3
"""Runs the grpcurl and buf curl examples of README.md against a real server
and fails on any difference from the output the README shows.

Every ```sh block whose first line starts with `grpcurl` or `buf curl` is run
with bash, and the fenced block right after it is its expected output
(stdout, then stderr). Times and etags differ from run to run and are masked
on both sides. With --update, the README's outputs are rewritten instead.

Usage: readme_examples.py BINARY [--update]
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\n", re.S | re.M)
VOLATILE = re.compile(r'"(createTime|updateTime|etag)": "[^"]*"')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def normalise(text):
    lines = [line.rstrip() for line in VOLATILE.sub(r'"\1": "…"', text).strip().splitlines()]
    return "\n".join(lines)


def examples(readme):
    """(command block match, output block match) pairs, in order."""
    blocks = list(FENCE.finditer(readme))
    pairs = []
    for i, block in enumerate(blocks):
        info, body = block.group(1).strip(), block.group(2)
        if info == "sh" and body.startswith(("grpcurl", "buf curl")):
            if i + 1 >= len(blocks):
                sys.exit(f"example without an output block: {body.splitlines()[0]}")
            pairs.append((block, blocks[i + 1]))
    return pairs


def main():
    binary, update = sys.argv[1], "--update" in sys.argv[2:]
    readme = open(README, encoding="utf-8").read()
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="segmentd-e2e-")
    log = open(os.path.join(data_dir, "server.log"), "w+")
    server = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(data_dir, "db"),
         "--log-format", "json"],
        stdout=log, stderr=log)
    try:
        for _ in range(300):
            ok = subprocess.run([binary, "healthcheck", "--addr", f"127.0.0.1:{port}"],
                                capture_output=True).returncode == 0
            if ok:
                break
            time.sleep(0.1)
        else:
            sys.exit("the server never reported SERVING")

        failures, replacements = 0, []
        pairs = examples(readme)
        for command, expected in pairs:
            script = command.group(2).replace("localhost:50051", f"127.0.0.1:{port}")
            run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
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
        if update:
            for start, end, text in reversed(replacements):
                readme = readme[:start] + text + readme[end:]
            open(README, "w", encoding="utf-8").write(readme)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
        log.seek(0)
        server_log = log.read()
    if code != 0 or '"store flushed"' not in server_log:
        print(server_log)
        sys.exit(f"the server did not shut down cleanly on SIGTERM (exit code {code})")
    if update:
        print(f"{len(replacements)} of {len(pairs)} outputs updated")
    else:
        print(f"{len(pairs) - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
