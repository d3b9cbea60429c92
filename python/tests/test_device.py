"""The chatvault Python package end to end, against a real `chatvault-vault serve` process.

Plan (issue 14): enable with a password; back up a sample folder with progress callbacks
observed; lose the phone: a new home restores with the password; wrong passwords raise
WrongPassword with attempts_left 9, 8, ...; switch to the key; restore with the key on another
home; a backup cancelled from its progress callback leaves `check` clean.

The vault binary is $CHATVAULT_VAULT_BIN, else target/debug/chatvault-vault of this workspace
(scripts/ci-python.sh builds it). Passwords use the production key-stretching parameters.
"""

import os
import random
import subprocess
import time
from pathlib import Path

import pytest

import chatvault

ROOT = Path(__file__).resolve().parents[2]
VAULT_BIN = Path(os.environ.get("CHATVAULT_VAULT_BIN", ROOT / "target" / "debug" / "chatvault-vault"))
PASSWORD = "correct horse battery"


class Vault:
    def __init__(self, data: Path):
        if not VAULT_BIN.exists():
            raise RuntimeError(f"{VAULT_BIN} is missing: cargo build -p chatvault-vault")
        self.data = data
        self.proc = subprocess.Popen(
            [str(VAULT_BIN), "serve", "--dev-issuer", "--listen", "127.0.0.1:0",
             "--rate-limit-ip", "0", "--rate-limit-account", "0", "--data-dir", str(data)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        self.url = line[len("listening on "):]
        assert self.proc.stdout.readline().startswith("server identity ")

    def token(self, account: str) -> str:
        out = subprocess.run(
            [str(VAULT_BIN), "token", "--account", account, "--data-dir", str(self.data)],
            check=True, capture_output=True, text=True,
        )
        return out.stdout.strip()

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def vault(tmp_path):
    v = Vault(tmp_path / "vault-data")
    yield v
    v.stop()


def sample_chats(root: Path) -> Path:
    """A chat folder: a few media files of random bytes (several chunks each) and a text file."""
    rng = random.Random(14)
    chats = root / "chats"
    (chats / "Media").mkdir(parents=True)
    for i in range(4):
        (chats / "Media" / f"img-{i}.jpg").write_bytes(rng.randbytes(700_000))
    (chats / "msgstore.txt").write_text("hello from the chats\n")
    return chats


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Recorder(chatvault.ProgressListener):
    """A progress listener: a chatvault.ProgressListener with on_progress(done, total, path)."""

    def __init__(self):
        self.calls = []

    def on_progress(self, done_bytes, total_bytes, current_path):
        self.calls.append((done_bytes, total_bytes, current_path))


class CancelOnThirdFile(chatvault.ProgressListener):
    def __init__(self, token):
        self.token = token
        self.files = set()

    def on_progress(self, done_bytes, total_bytes, current_path):
        self.files.add(current_path)
        if len(self.files - {""}) >= 3:
            self.token.cancel()


def test_password_backup_lost_phone_wrong_passwords_switch_to_key(tmp_path, vault):
    chats = sample_chats(tmp_path)
    repo = str(tmp_path / "repo")
    d = chatvault.Device(str(tmp_path / "phone-a"))
    assert d.status().mode == "off"
    d.enable_with_password(repo, vault.url, "alice", vault.token("alice"), PASSWORD)
    st = d.status()
    assert (st.mode, st.repo, st.vault_url) == ("password", repo, vault.url)
    assert st.vault_identity

    rec = Recorder()
    info = d.backup_now([str(chats)], progress=rec)
    assert isinstance(info, chatvault.SnapshotInfo)
    assert info.files == 5
    assert info.bytes == 4 * 700_000 + len("hello from the chats\n")
    assert info.uploaded_bytes > 4 * 700_000
    assert rec.calls, "progress callbacks observed"
    assert any(c[2].endswith("img-0.jpg") for c in rec.calls)
    assert rec.calls[-1][0] == info.bytes
    assert all(done <= total for done, total, _ in rec.calls)
    assert [s.id for s in d.snapshots()] == [info.id]
    assert d.status().last_snapshot == info

    # Lose the phone: wrong passwords count down, then the right one restores.
    n = chatvault.Device(str(tmp_path / "phone-b"))
    target = tmp_path / "restored-b"
    for left in (9, 8, 7):
        with pytest.raises(chatvault.ChatvaultError.WrongPassword) as e:
            n.restore_with_password(repo, vault.url, "alice", vault.token("alice"),
                                    "not my password", "latest", str(target))
        assert e.value.attempts_left == left
        assert f"{left} attempt(s) left" in str(e.value), str(e.value)
        assert isinstance(e.value, chatvault.ChatvaultError)
        assert n.status().mode == "off"
    r = n.restore_with_password(repo, vault.url, "alice", vault.token("alice"), PASSWORD,
                                "latest", str(target))
    assert isinstance(r, chatvault.RestoreInfo)
    assert (r.snapshot_id, r.files, r.bytes) == (info.id, 5, info.bytes)
    assert tree(target / "chats") == tree(chats)
    assert n.status().mode == "password"

    # The new phone backs up, changes the password, then switches to the key.
    (chats / "msgstore.txt").write_text("a second day\n")
    second = n.backup_now([str(chats)])
    assert second.uploaded_bytes < 200_000, "unchanged media is not uploaded again"
    n.change_password(PASSWORD, "a new passphrase")
    with pytest.raises(chatvault.ChatvaultError.WrongPassword):
        n.switch_to_key(PASSWORD)
    key_text = n.switch_to_key("a new passphrase")
    assert len(key_text.replace(" ", "").replace("-", "")) == 64
    assert n.status().mode == "key"

    # Restore with the key on another home; a wrong key is WrongKey.
    other = chatvault.Device(str(tmp_path / "phone-c"))
    wrong = "0" * 64
    with pytest.raises(chatvault.ChatvaultError.WrongKey):
        other.restore_with_key(repo, wrong, "latest", str(tmp_path / "nope"))
    r = other.restore_with_key(repo, key_text, "latest", str(tmp_path / "restored-c"))
    assert r.snapshot_id == second.id
    assert tree(tmp_path / "restored-c" / "chats") == tree(chats)
    assert [s.id for s in other.snapshots()] == [info.id, second.id]


def test_cancelled_backup_leaves_check_clean(tmp_path):
    chats = sample_chats(tmp_path)
    d = chatvault.Device(str(tmp_path / "phone"))
    key_text = d.enable_with_key(str(tmp_path / "repo"))
    assert key_text
    token = chatvault.CancelToken()
    assert not token.is_cancelled()
    with pytest.raises(chatvault.ChatvaultError.Cancelled):
        d.backup_now([str(chats)], progress=CancelOnThirdFile(token), cancel=token)
    assert token.is_cancelled()
    assert d.snapshots() == []
    assert d.status().last_snapshot is None
    c = d.check()
    assert c.errors == [] and c.warnings == [] and c.snapshots == 0
    info = d.backup_now([str(chats)], cancel=chatvault.CancelToken())
    assert [s.id for s in d.snapshots()] == [info.id]
    assert d.check().errors == []


def test_transfer_limits_pace_backup_and_restore_and_durable_restore_is_exact(tmp_path):
    # ~2.8 MB of incompressible media: at 1024 KiB/s each way, the upload and the download
    # cannot take less than ~2.7 s (the token bucket admits a quarter second's burst); without
    # limits both take a fraction of that on any machine. Lower bounds only: a slow machine
    # makes them longer, never shorter.
    chats = sample_chats(tmp_path)
    d = chatvault.Device(str(tmp_path / "phone"))
    key_text = d.enable_with_key(str(tmp_path / "repo"))
    d.set_transfer(download_kib_per_s=1024, upload_kib_per_s=1024)
    start = time.monotonic()
    info = d.backup_now([str(chats)])
    assert time.monotonic() - start > 2.0, "the upload limit paces the backup"
    assert info.uploaded_bytes > 2_700_000

    n = chatvault.Device(str(tmp_path / "new-phone"))
    n.set_transfer(download_kib_per_s=1024, durable_restore=True)
    start = time.monotonic()
    r = n.restore_with_key(str(tmp_path / "repo"), key_text, "latest", str(tmp_path / "restored"))
    assert time.monotonic() - start > 2.0, "the download limit paces the restore"
    assert r.snapshot_id == info.id
    assert tree(tmp_path / "restored" / "chats") == tree(chats)

    # Lifted: no limit, the default durability.
    n.set_transfer()
    r = n.restore("latest", str(tmp_path / "restored-again"))
    assert tree(tmp_path / "restored-again" / "chats") == tree(chats)


def test_errors_without_a_repository(tmp_path):
    d = chatvault.Device(str(tmp_path / "home"))
    with pytest.raises(chatvault.ChatvaultError.NoRepository) as e:
        d.snapshots()
    assert str(e.value).startswith("this device has no chatvault backup configured"), str(e.value)
    d.enable_with_key(str(tmp_path / "repo"))
    with pytest.raises(chatvault.ChatvaultError.Invalid):
        d.enable_with_key(str(tmp_path / "repo2"))
