"""``billgw electricity-sim`` runs a real host on the port it prints: a
sign-on record in, its answer out, the ledger file created."""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from billgw.billing_adapters.electricity.records import RecordCodec
from billgw.billing_adapters.transports.tcp_records import RecordFramer

pytestmark = pytest.mark.timeout(60)


def billgw() -> str:
    candidate = Path(sys.executable).with_name("billgw")
    return str(candidate) if candidate.exists() else shutil.which("billgw")


@pytest.mark.parametrize("password, result", [("secret", "00"), ("wrong", "91")])
def test_the_simulator_signs_a_client_on_over_a_real_socket(tmp_path, password, result):
    db = tmp_path / "host.sqlite"
    process = subprocess.Popen([billgw(), "electricity-sim", "--listen", "tcp:0:interface=127.0.0.1",
                                "--db", str(db), "--code-page", "cp500"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path)
    try:
        match = None
        for _ in range(50):  # JSON log lines come first on stdout
            line = process.stdout.readline()
            match = re.search(r"listening on 127\.0\.0\.1:(\d+) \(length2, cp500; ledger ", line)
            if match or not line:
                break
        assert match, line
        codec, framer = RecordCodec("cp500"), RecordFramer("length2")
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=10) as sock:
            sock.sendall(framer.frame(codec.encode("SGON", 7, user="BILLGW", password=password, terminal="T1")))
            answers: list[bytes] = []
            while not answers:
                data = sock.recv(4096)
                assert data, "the simulator closed the connection"
                answers += framer.feed(data)
        answer = codec.decode(answers[0])
        assert (answer.kind, answer.sequence, answer["result"]) == ("SGOA", 7, result)
        assert db.is_file()
    finally:
        process.terminate()
        process.wait(timeout=10)
