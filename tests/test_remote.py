"""Remote bench over SSH against a real OpenSSH server on 127.0.0.1 playing a Jetson.

The server (``/usr/sbin/sshd`` from Debian's openssh-server) runs as this user with a throwaway host
key, a throwaway user key in a temporary ``authorized_keys`` and ``SetEnv EDGEPROTO_FAKE_TEGRA=<dir>``,
so the "board" side runs ``edgeproto bench --target jetson`` with a fake tegrastats and ONNX Runtime
standing in for TensorRT. It is killed at teardown.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeproto.errors import EdgeprotoError
from edgeproto.commands.bench import run_bench
from edgeproto.export.bundle_writer import export_bundle
from edgeproto.measure.jetson import bench_remote
from test_bench import fake_board

SSHD = "/usr/sbin/sshd"
APT = "apt-get install -y openssh-server openssh-client"
LIMIT_S = 30.0  # every failure must be reported well within this
FAST = dict(min_queries=5, min_seconds=0.2, threads=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeproto-test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    for tool in ("ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"OpenSSH client ({tool}) not installed: {APT}")
    if not os.access(SSHD, os.X_OK):
        pytest.skip(f"{SSHD} not found (the OpenSSH server is needed for the remote-bench tests): {APT}")
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory

    d = tmp_path_factory.mktemp("sshd")
    host_key = _keygen(d / "host_key")
    user_key = _keygen(d / "user_key")
    stranger = _keygen(d / "stranger_key")
    (d / "authorized_keys").write_text(Path(f"{user_key}.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    board = fake_board(d / "board")
    port = _free_port()
    options = {
        "ListenAddress": "127.0.0.1", "Port": str(port), "HostKey": str(host_key), "PidFile": str(d / "sshd.pid"),
        "AuthorizedKeysFile": str(d / "authorized_keys"), "StrictModes": "no", "UsePAM": "no",
        "PasswordAuthentication": "no", "KbdInteractiveAuthentication": "no", "PubkeyAuthentication": "yes",
        "PermitRootLogin": "prohibit-password", "Subsystem": "sftp internal-sftp",
        "SetEnv": f"EDGEPROTO_FAKE_TEGRA={board}", "LogLevel": "VERBOSE",
    }
    argv = [SSHD, "-D", "-e", "-f", "/dev/null"]
    for key, value in options.items():
        argv += ["-o", f"{key}={value}" if key != "Subsystem" else f"{key} {value}"]
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited with {proc.returncode}: {(d / 'sshd.log').read_text()[-1500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"sshd did not listen on port {port}: {(d / 'sshd.log').read_text()[-1500:]}")
                time.sleep(0.1)
        known = d / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} {Path(f'{host_key}.pub').read_text()}")
        yield {"host": f"{getpass.getuser()}@127.0.0.1", "port": port, "identity": str(user_key),
               "stranger": str(stranger), "known_hosts": str(known), "dir": d, "board": board}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("remote") / "b"
    export_bundle(trained("l2_log"), path)
    return path


def _ssh(sshd, **over) -> dict:
    args = {"host": sshd["host"], "port": sshd["port"], "identity": sshd["identity"],
            "known_hosts": sshd["known_hosts"], "remote_python": sys.executable}
    args.update(over)
    return args


def test_remote_jetson_bench(sshd, bundle, capsys):
    t0 = time.monotonic()
    code = run_bench(bundle, "jetson", "fp32", "prototypes", "1,2", 1, 5, 0.2, None, None, sshd["host"],
                     sshd["port"], sshd["identity"], sys.executable, sshd["known_hosts"], True)
    assert code == 0 and time.monotonic() - t0 < 60
    report = json.loads(capsys.readouterr().out)
    jet = report["jetson"]
    assert report["target"] == "jetson" and jet["model"] == "NVIDIA Jetson Orin Nano Developer Kit (fake)"
    assert jet["fake_root"] == str(sshd["board"])
    assert jet["nvpmodel"]["name"] == "15W" and jet["l4t"] == "36.3.0"
    if not jet["tensorrt"]:  # ONNX Runtime stands in, and the report says so
        assert report["runtime_target"] == "onnxruntime" and "not TensorRT numbers" in report["notes"][0]
    for row in report["batches"]:
        assert row["latency"]["queries"] >= 5 and row["latency"]["p50_ms"] > 0
        power = row["power"]
        assert power["rail"] == "VDD_IN" and power["mean_mw"] == 5000.0
        assert power["energy_per_inference_mj"] == pytest.approx(5000.0 / row["latency"]["throughput"])
    remote = report["remote"]
    assert remote["remote_python"] == sys.executable and remote["remote_edgeproto"]
    # the board benched its temporary copy (here on this machine), removed afterwards
    assert "edgeproto-bench-" in report["bundle"] and not Path(report["bundle"]).parent.exists()


def test_remote_error_from_the_board_is_reported(sshd, bundle):
    with pytest.raises(EdgeprotoError, match=r"on .*127\.0\.0\.1.*no onnxruntime int8 artifact"):
        bench_remote(bundle, target="jetson", precision="int8", **_ssh(sshd), **FAST)


def _quick_failure(match: str, bundle, **kwargs):
    t0 = time.monotonic()
    with pytest.raises(EdgeprotoError, match=match):
        bench_remote(bundle, connect_timeout=5, **kwargs, **FAST)
    assert time.monotonic() - t0 < LIMIT_S


def test_unreachable_host(sshd, bundle):
    _quick_failure("cannot reach .*Connection refused", bundle, **_ssh(sshd, port=_free_port()))


def test_refused_key(sshd, bundle):
    _quick_failure("SSH refused the key", bundle, **_ssh(sshd, identity=sshd["stranger"]))


def test_unknown_host_key(sshd, bundle):
    other = sshd["dir"] / "empty_known_hosts"
    other.write_text("")
    _quick_failure("host key .* unknown or changed", bundle, **_ssh(sshd, known_hosts=str(other)))


def test_remote_python_without_edgeproto(sshd, bundle, tmp_path):
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK) or subprocess.run([python, "-c", "import edgeproto"],
                                                        capture_output=True).returncode == 0:
        python = str(tmp_path / "venv/bin/python")  # a fresh virtual environment: no edgeproto in it
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    _quick_failure("no edgeproto", bundle, **_ssh(sshd, remote_python=python))
    _quick_failure("not found", bundle, **_ssh(sshd, remote_python=str(tmp_path / "no/such/python")))
