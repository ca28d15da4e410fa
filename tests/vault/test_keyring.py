"""The local keyring file: creation, refusal of unsafe or broken files, rotation, retirement."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from vault import envelope
from vault.errors import InvalidCiphertext, KeyringError, RetireRefused
from vault.kek import KekProvider, WrappedKey
from vault.keyring import LocalKeyringProvider

AAD = envelope.dek_binding("tenant-1", "integration-1", bytes(16))
DEK = bytes(range(32))


def doc(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text())
    return data


# Small sync helpers: the tests are async only to await the provider; file pokes are instant.
def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def chmod(path: Path, mode: int) -> None:
    path.chmod(mode)


def text_of(path: Path) -> str:
    return path.read_text()


def truncate_half(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def write(path: Path, content: str | bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    path.chmod(mode)


def valid_doc(**changes: object) -> dict[str, object]:
    key = base64.b64encode(bytes(32)).decode()
    document: dict[str, object] = {
        "format": "calendar-gateway-keyring",
        "format_version": 1,
        "keyring_id": "0" * 32,
        "versions": [
            {
                "version": 1,
                "state": "primary",
                "created_at": "2026-01-01T00:00:00+00:00",
                "key": key,
            }
        ],
    }
    document.update(changes)
    return document


async def test_first_open_generates_an_owner_only_keyring(keyring_path: Path) -> None:
    provider = await LocalKeyringProvider.open(keyring_path)
    assert isinstance(provider, KekProvider)
    assert mode_of(keyring_path) == 0o600
    content = doc(keyring_path)
    assert [v["state"] for v in content["versions"]] == ["primary"]  # type: ignore[attr-defined]
    assert provider.kek_id == f"local:{content['keyring_id']}"
    assert await provider.primary_version() == 1


async def test_reopening_uses_the_same_key(keyring_path: Path) -> None:
    first = await LocalKeyringProvider.open(keyring_path)
    wrapped = await first.wrap(DEK, AAD)
    second = await LocalKeyringProvider.open(keyring_path)
    assert await second.unwrap(wrapped, AAD) == DEK


async def test_missing_file_without_create_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(KeyringError, match=str(path)):
        await LocalKeyringProvider.open(path, create=False)
    assert not path.exists()


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o660, 0o602])
async def test_refuses_a_file_others_can_read_or_write(keyring_path: Path, mode: int) -> None:
    await LocalKeyringProvider.open(keyring_path)
    chmod(keyring_path, mode)
    with pytest.raises(KeyringError, match="chmod 600") as info:
        await LocalKeyringProvider.open(keyring_path)
    assert str(keyring_path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[]", "JSON object"),
        (json.dumps(valid_doc(format="other")), "format_version"),
        (json.dumps(valid_doc(versions=[])), "no key versions"),
        (
            json.dumps(
                valid_doc(
                    versions=[
                        {
                            "version": 1,
                            "state": "active",
                            "created_at": "2026-01-01T00:00:00",
                            "key": base64.b64encode(bytes(32)).decode(),
                        }
                    ]
                )
            ),
            "exactly one primary",
        ),
        (
            json.dumps(
                valid_doc(
                    versions=[
                        {
                            "version": v,
                            "state": "primary",
                            "created_at": "2026-01-01T00:00:00",
                            "key": base64.b64encode(bytes(32)).decode(),
                        }
                        for v in (1, 2)
                    ]
                )
            ),
            "exactly one primary",
        ),
        (
            json.dumps(
                valid_doc(
                    versions=[
                        {
                            "version": 1,
                            "state": "primary",
                            "created_at": "2026-01-01T00:00:00",
                            "key": base64.b64encode(bytes(16)).decode(),
                        }
                    ]
                )
            ),
            "must be 32 bytes",
        ),
        (
            json.dumps(
                valid_doc(
                    versions=[
                        {
                            "version": 1,
                            "state": "primary",
                            "created_at": "2026-01-01T00:00:00",
                            "key": "not base64!",
                        }
                    ]
                )
            ),
            "not valid base64",
        ),
    ],
    ids=[
        "corrupt",
        "empty",
        "not-object",
        "format",
        "no-versions",
        "no-primary",
        "two-primaries",
        "short-key",
        "bad-base64",
    ],
)
async def test_refuses_a_broken_file_saying_what_is_wrong(
    keyring_path: Path, content: str, problem: str
) -> None:
    write(keyring_path, content)
    with pytest.raises(KeyringError, match=problem) as info:
        await LocalKeyringProvider.open(keyring_path)
    assert str(keyring_path) in str(info.value)


async def test_refuses_a_truncated_file(keyring_path: Path) -> None:
    await LocalKeyringProvider.open(keyring_path)
    truncate_half(keyring_path)
    with pytest.raises(KeyringError, match="corrupt or truncated") as info:
        await LocalKeyringProvider.open(keyring_path)
    assert str(keyring_path) in str(info.value)


async def test_refuses_a_symlink_in_place_of_the_file(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    await LocalKeyringProvider.open(real)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with pytest.raises(KeyringError, match=str(link)):
        await LocalKeyringProvider.open(link)


async def test_repr_and_errors_show_no_key_material(keyring_path: Path) -> None:
    provider = await LocalKeyringProvider.open(keyring_path)
    await provider.rotate()
    keys = [v["key"] for v in doc(keyring_path)["versions"]]  # type: ignore[attr-defined]
    shown = repr(provider) + repr(await provider.versions()) + repr(await provider.wrap(DEK, AAD))
    for key in keys:
        assert key not in shown
        assert base64.b64decode(key).hex() not in shown
    assert DEK.hex() not in shown


async def test_wrap_binds_aad(provider: LocalKeyringProvider) -> None:
    wrapped = await provider.wrap(DEK, AAD)
    assert await provider.unwrap(wrapped, AAD) == DEK
    with pytest.raises(InvalidCiphertext):
        await provider.unwrap(wrapped, envelope.dek_binding("tenant-1", "other", bytes(16)))


async def test_unknown_version_or_other_keyring_cannot_unwrap(
    provider: LocalKeyringProvider, tmp_path: Path
) -> None:
    wrapped = await provider.wrap(DEK, AAD)
    with pytest.raises(InvalidCiphertext):
        await provider.unwrap(WrappedKey(wrapped.kek_id, 7, wrapped.wrapped), AAD)
    other = await LocalKeyringProvider.open(tmp_path / "other.json")
    with pytest.raises(InvalidCiphertext):
        await other.unwrap(wrapped, AAD)


# -- rotation and retirement ------------------------------------------------------------------


async def test_rotate_adds_a_primary_and_old_wraps_still_open(
    provider: LocalKeyringProvider, keyring_path: Path
) -> None:
    before = await provider.wrap(DEK, AAD)
    assert await provider.rotate() == 2
    after = await provider.wrap(DEK, AAD)
    assert (before.kek_version, after.kek_version) == (1, 2)
    assert await provider.unwrap(before, AAD) == DEK
    states = {v.version: v.state for v in await provider.versions()}
    assert states == {1: "active", 2: "primary"}
    # Persisted: a fresh process sees the same.
    reopened = await LocalKeyringProvider.open(keyring_path)
    assert await reopened.primary_version() == 2
    assert await reopened.unwrap(after, AAD) == DEK
    assert mode_of(keyring_path) == 0o600


async def test_retire_refuses_the_primary(provider: LocalKeyringProvider) -> None:
    with pytest.raises(RetireRefused, match="primary"):
        await provider.retire(1)
    with pytest.raises(RetireRefused, match="does not exist"):
        await provider.retire(9)


async def test_retire_deletes_the_key_bytes_and_unwrap_then_fails(
    provider: LocalKeyringProvider, keyring_path: Path
) -> None:
    old = await provider.wrap(DEK, AAD)
    old_key = doc(keyring_path)["versions"][0]["key"]  # type: ignore[index]
    await provider.rotate()
    await provider.retire(1)
    assert old_key not in text_of(keyring_path)
    assert doc(keyring_path)["versions"][0] == {  # type: ignore[index]
        "version": 1,
        "state": "retired",
        "created_at": doc(keyring_path)["versions"][0]["created_at"],  # type: ignore[index]
    }
    with pytest.raises(InvalidCiphertext):
        await provider.unwrap(old, AAD)
    reopened = await LocalKeyringProvider.open(keyring_path)
    with pytest.raises(InvalidCiphertext):
        await reopened.unwrap(old, AAD)
    await provider.retire(1)  # idempotent


async def test_a_running_provider_picks_up_a_rotation_made_elsewhere(
    keyring_path: Path,
) -> None:
    now = [0.0]
    server = await LocalKeyringProvider.open(keyring_path, clock=lambda: now[0])
    cli = await LocalKeyringProvider.open(keyring_path)
    await cli.rotate()
    wrapped_by_cli = await cli.wrap(DEK, AAD)
    now[0] = 10.0  # past the reload interval
    assert await server.unwrap(wrapped_by_cli, AAD) == DEK
    assert await server.primary_version() == 2


ROTATE_SCRIPT = """
import asyncio, sys
from vault.keyring import LocalKeyringProvider
async def main():
    p = await LocalKeyringProvider.open(sys.argv[1], create=False)
    print(await p.rotate())
asyncio.run(main())
"""


async def test_concurrent_rotations_from_separate_processes_all_land(keyring_path: Path) -> None:
    await LocalKeyringProvider.open(keyring_path)

    async def rotate_in_process() -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            ROTATE_SCRIPT,
            str(keyring_path),
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parents[2],
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        return int(out)

    results = await asyncio.gather(*(rotate_in_process() for _ in range(4)))
    assert sorted(results) == [2, 3, 4, 5]
    reopened = await LocalKeyringProvider.open(keyring_path)
    states = {v.version: v.state for v in await reopened.versions()}
    assert states == {1: "active", 2: "active", 3: "active", 4: "active", 5: "primary"}
    assert not [p for p in keyring_path.parent.iterdir() if p.name.endswith(".tmp")]


async def test_closed_provider_forgets_keys(provider: LocalKeyringProvider) -> None:
    wrapped = await provider.wrap(DEK, AAD)
    await provider.close()
    with pytest.raises(InvalidCiphertext):
        await provider.unwrap(wrapped, AAD)


def test_keyring_generation_does_not_leave_a_world_readable_window(tmp_path: Path) -> None:
    # O_CREAT|O_EXCL with 0600 even under a permissive umask.
    old = os.umask(0)
    try:
        asyncio.run(LocalKeyringProvider.open(tmp_path / "k.json"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.json").stat().st_mode) == 0o600


OPEN_SCRIPT = """
import asyncio, sys
from vault.keyring import LocalKeyringProvider
async def main():
    p = await LocalKeyringProvider.open(sys.argv[1])
    print(p.kek_id)
asyncio.run(main())
"""


async def test_processes_starting_together_all_use_one_generated_keyring(tmp_path: Path) -> None:
    path = tmp_path / "var" / "keyring.json"

    async def open_in_process() -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            OPEN_SCRIPT,
            str(path),
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parents[2],
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        return out.decode().strip()

    kek_ids = await asyncio.gather(*(open_in_process() for _ in range(4)))
    assert len(set(kek_ids)) == 1
    reopened = await LocalKeyringProvider.open(path)
    assert reopened.kek_id == kek_ids[0]
    assert mode_of(path) == 0o600
