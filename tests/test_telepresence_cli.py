"""The telepresence commands (`talking-heads token`, `send`, `receive`, `telepresence-demo`) as a user runs
them: what they write and print, and that bad input gives one readable line and exit code 2 (no traceback)."""

from __future__ import annotations

import socket
import stat

import pytest

from talking_heads.cli import main

PHOTO = "photos/avatarify_jobs.jpg"
SHORT = "videos/test/lp_driving_d1_old.mp4"  # 16 frames at 30 fps


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, text: str) -> None:
    assert code == 2 and "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("talking-heads")]
    assert len(lines) == 1 and text in lines[0], err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_token_files_are_private_and_never_overwritten(tmp_path, capsys):
    path = tmp_path / "keys" / "tok"
    code, out, _ = run(capsys, "token", path)
    assert code == 0 and "mode 0600" in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert len(first.strip()) >= 40
    _one_line_error(*run(capsys, "token", path)[::2], "exists: not overwriting")
    assert path.read_text() == first
    assert run(capsys, "token", path, "--force")[0] == 0 and path.read_text() != first


def test_send_refuses_bad_tokens_addresses_and_unreachable_receivers(shared_data, tmp_path, capsys):
    token = tmp_path / "tok"
    assert run(capsys, "token", token)[0] == 0
    video = shared_data / SHORT
    open_token = tmp_path / "open"
    open_token.write_text(token.read_text())
    open_token.chmod(0o644)
    code, _, err = run(capsys, "send", "--video", video, "--to", "127.0.0.1:9", "--token-file", open_token)
    _one_line_error(code, err, "permissions 0644 let others read the token")
    code, _, err = run(capsys, "send", "--video", video, "--to", "127.0.0.1:x", "--token-file", token)
    _one_line_error(code, err, "expected HOST:PORT")
    code, _, err = run(capsys, "send", "--video", video, "--to", f"127.0.0.1:{_free_port()}", "--token-file", token,
                       "--wait", "0.6")  # waited for (retried with backoff), then refused in one line
    assert "retrying for up to 1 s" in err
    _one_line_error(code, err, "cannot connect")
    code, _, err = run(capsys, "send", "--video", tmp_path / "missing.mp4", "--to", "127.0.0.1:9", "--token-file", token)
    _one_line_error(code, err, "no such file")
    code, _, err = run(capsys, "send", "--video", video, "--to", "127.0.0.1:9", "--token-file", tmp_path / "none")
    _one_line_error(code, err, "no such token file")
    code, _, err = run(capsys, "send", "--video", video, "--to", "127.0.0.1:9", "--token-file", token, "--step", "9")
    _one_line_error(code, err, "--step 9")


def test_receive_refuses_bad_input(shared_data, tiny_model_dir, tmp_path, capsys):
    token = tmp_path / "tok"
    run(capsys, "token", token)
    base = ["receive", "--token-file", token, "--model", tiny_model_dir, "--listen", "127.0.0.1:0"]
    code, _, err = run(capsys, *base, "--avatar", tmp_path / "no_avatar")
    _one_line_error(code, err, "no_avatar")
    code, _, err = run(capsys, *base, "--avatar", tmp_path, "--out", tmp_path / "x.avi")
    _one_line_error(code, err, "must be an .mp4")
    code, _, err = run(capsys, *base[:-1], "127.0.0.1:99999", "--avatar", tmp_path)
    _one_line_error(code, err, "outside 0..65535")
    code, _, err = run(capsys, *base, "--avatar", tmp_path, "--tls-cert", tmp_path / "cert.pem")
    _one_line_error(code, err, "needs both --tls-cert and --tls-key")


def test_telepresence_demo_writes_a_labelled_side_by_side(shared_data, tiny_model_dir, tmp_path, capsys):
    from talking_heads.data.video import probe
    from talking_heads.provenance import verify

    avatar = tmp_path / "avatar"
    assert run(capsys, "avatar", "create", shared_data / PHOTO, "-o", avatar, "--model", tiny_model_dir)[0] == 0
    out = tmp_path / "demo"
    code, text, err = run(capsys, "telepresence-demo", "--video", shared_data / SHORT, "--avatar", avatar,
                          "--model", tiny_model_dir, "--out", out)
    assert code == 0, err
    assert "kbit/s" in text and "fps" in text and "latency" in text and "side by side" in text
    sent = int(text.split("sent ")[1].split()[0])
    info = probe(out / "side_by_side.mp4")
    assert info.num_frames == sent and (info.width, info.height) == (512, 256)  # original | received
    assert verify(out / "side_by_side.mp4").synthetic and verify(out / "received.mp4").synthetic
    assert (out / "stats.json").is_file()
    code, _, err = run(capsys, "telepresence-demo", "--video", tmp_path / "none.mp4", "--avatar", avatar,
                       "--model", tiny_model_dir, "--out", out)
    _one_line_error(code, err, "no such file")


@pytest.mark.slow
def test_send_and_receive_commands_over_tls(shared_data, tiny_model_dir, tmp_path, capsys):
    """The real commands, both ends, TLS with a self-signed certificate (openssl), loopback only."""
    import shutil
    import subprocess
    import sys
    import time

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate to test TLS with")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    token = tmp_path / "tok"
    run(capsys, "token", token)
    avatar = tmp_path / "avatar"
    run(capsys, "avatar", "create", shared_data / PHOTO, "-o", avatar, "--model", tiny_model_dir)
    port = _free_port()
    log = tmp_path / "receiver.txt"
    with open(log, "w") as f:
        rx = subprocess.Popen([sys.executable, "-m", "talking_heads", "receive", "--avatar", str(avatar), "--model",
                               str(tiny_model_dir), "--listen", f"127.0.0.1:{port}", "--token-file", str(token),
                               "--once", "--out", str(tmp_path / "rec.mp4"), "--tls-cert", str(cert), "--tls-key",
                               str(key), "--device", "cpu"], stdout=f, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):  # at most 30 s for the receiver to listen
            if "listening on" in log.read_text() or rx.poll() is not None:
                break
            time.sleep(0.1)
        assert "wss://127.0.0.1" in log.read_text() and "page: https://" in log.read_text()
        code, _, err = run(capsys, "send", "--video", shared_data / SHORT, "--to", f"127.0.0.1:{port}",
                           "--token-file", token, "--tls-ca", tmp_path / "token")  # not a certificate
        assert code == 2 and "Traceback" not in err
        code, out, err = run(capsys, "send", "--video", shared_data / SHORT, "--to", f"127.0.0.1:{port}",
                             "--token-file", token, "--tls-ca", cert)
        assert code == 0, err
        assert "sent: " in out and "kbit/s" in out
        rx.wait(60)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    text = log.read_text()
    assert rx.returncode == 0, text
    assert "recording:" in text and (tmp_path / "rec.mp4").is_file() and "Traceback" not in text
