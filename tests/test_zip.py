"""stream_zip's members: names, text, responses, and sizes held to what was counted."""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
import os
import stat
import threading
import time
import zipfile

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from django_streamer import stream_csv, stream_zip
from django_streamer.core.stream import State
from django_streamer.core.zipsources import OWN_THREAD
from tests.test_formats import body_any, check_zip

pytestmark = pytest.mark.urls("tests.writer_urls")


# -- names -----------------------------------------------------------------

CONTROLS = [*range(0x20), 0x7F, 0x85, 0x9B]  # C0 (ESC, newlines...), DEL, two of C1
BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]  # embeddings, overrides, isolates
HIDDEN = [chr(c) for c in CONTROLS + BIDI]


@pytest.mark.parametrize("char", HIDDEN, ids=lambda c: f"U+{ord(c):04X}")
def test_names_with_control_or_bidi_characters_are_refused_in_the_view(char):
    name = f"invoice{char}txt.exe"
    with pytest.raises(ValueError, match=rf"member 'invoice.*U\+{ord(char):04X}"):
        stream_zip([("ok.txt", b"x"), (name, b"y")])
    assert f"U+{ord(char):04X}".encode() in body_any(f"/bad-zip?name={name}")[1]


@pytest.mark.parametrize(
    ("first", "second", "why"),
    [
        ("a/b.txt", "a/b.txt", "'a/b.txt' appears twice"),
        ("README.txt", "readme.TXT", "'README.txt' and 'readme.TXT' differ only in case"),
        ("caf\u00e9.txt", "cafe\u0301.txt", "differ only in case or Unicode form"),
    ],
)
def test_duplicate_names_up_to_case_are_refused(first, second, why):
    with pytest.raises(ValueError, match=why):
        stream_zip([(first, b"x"), ("other", b"z"), (second, b"y")])


def test_a_name_of_64_kib_is_refused_and_one_byte_less_is_written(tmp_path):
    with pytest.raises(ValueError, match="is 65536 bytes long in UTF-8; a ZIP name holds at most"):
        stream_zip([("n" * 65_534 + "\u00e9", b"x")])  # 65,536 bytes, 65,535 characters
    longest = "d/" * 100 + "n" * (65_535 - 200)
    opened = zipfile.ZipFile(io.BytesIO(b"".join(stream_zip([(longest, b"x")]))))
    assert opened.namelist() == [longest] and opened.read(longest) == b"x"


def test_other_unwritable_names_are_refused():
    with pytest.raises(ValueError, match="names a folder"):
        stream_zip([("dir/", b"")])
    with pytest.raises(ValueError, match="lone surrogate"):
        stream_zip([("a\ud800.txt", b"x")])


def test_members_from_a_generator_are_all_checked_before_the_first_byte():
    def members():
        yield ("a.txt", b"x")
        yield ("A.TXT", b"y")

    with pytest.raises(ValueError, match="differ only in case"):
        stream_zip(members())


# -- text ------------------------------------------------------------------


def test_text_members_are_encoded_utf8(tmp_path):
    rows = [[1, "caf\u00e9", "a,b"], [2, "\u65e5\u672c", 'say "hi"']]

    def produce(out):
        csv.writer(out).writerows(rows)  # csv.writer writes str
        out.write(b"bytes too\r\n")

    async def aproduce(out):
        await out.write("async caf\u00e9\n")
        await out.write(b"and bytes\n")

    async def agen():
        yield "async gen \u00e9\n"
        yield b"bytes\n"

    members = [
        ("rows.csv", produce),
        ("amade.txt", aproduce),
        ("gen.txt", (f"line {i} \u00e9\n" for i in range(3))),
        ("agen.txt", agen()),
        ("whole.txt", "one str \u00e9"),
        ("sized.txt", iter(["\u00e9"]), {"size": 2, "compress": False}),
    ]
    opened = check_zip(b"".join(stream_zip(members)), tmp_path)
    expected = '1,café,"a,b"\r\n2,日本,"say ""hi"""\r\nbytes too\r\n'
    assert opened.read("rows.csv").decode() == expected
    assert opened.read("amade.txt") == "async caf\u00e9\nand bytes\n".encode()
    assert opened.read("gen.txt") == "".join(f"line {i} \u00e9\n" for i in range(3)).encode()
    assert opened.read("agen.txt") == "async gen \u00e9\nbytes\n".encode()
    assert opened.read("whole.txt") == "one str \u00e9".encode()
    assert opened.read("sized.txt") == "\u00e9".encode()


def test_a_member_yielding_neither_bytes_nor_str_is_named():
    async def agen():
        yield 42

    async def aproduce(out):
        await out.write(3.5)

    for member, what in [
        (("nums.txt", iter([b"ok", 42])), "its source gave a int"),
        (("anums.txt", agen()), "its source gave a int"),
        (("made.txt", lambda out: out.write(None)), "write\\(\\) takes bytes or str, not NoneType"),
        (("amade.txt", aproduce), "write\\(\\) takes bytes or str, not float"),
    ]:
        with pytest.raises(TypeError, match=rf"{member[0]}'?: .*{what}"):
            b"".join(stream_zip([member]))


# -- responses -------------------------------------------------------------


def test_a_response_as_a_member_is_refused_and_ended():
    inner = stream_csv([[1, 2]], header=["a", "b"])
    with pytest.raises(TypeError, match=r"member 'orders\.csv' is a StreamingResponse: a member"):
        stream_zip([("orders.csv", inner)])
    assert inner.stream.state is State.CLOSED  # its stream (and metrics row) ended now


# -- sizes -----------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("how", ["grow", "shrink"])
def test_a_file_member_is_read_to_the_size_counted_or_fails(tmp_path, how, compress):
    member = tmp_path / "m.bin"
    member.write_bytes(b"m" * 200_000)
    response = stream_zip([("m.bin", member, {"compress": compress})])
    with open(member, "ab") as file:
        file.write(b"more") if how == "grow" else file.truncate(100_000)
    got = bytearray()
    with pytest.raises(RuntimeError, match=r"member 'm.bin': .* bytes, not the 200000 it had"):
        for chunk in response:
            got += chunk
    if not compress:  # sized: fewer bytes than the Content-Length promised
        assert len(got) < int(response["Content-Length"])
    assert b"PK\x05\x06" not in got  # no end of central directory: no archive that looks whole
    response.close()


def test_a_file_member_that_grows_while_it_is_read_fails_before_its_end(tmp_path):
    member = tmp_path / "m.bin"
    member.write_bytes(b"m" * 200_000)
    response = stream_zip([("m.bin", member, {"compress": False})], chunk_size=1024)
    chunks = iter(response)
    got = bytearray(next(chunks))  # the file is open, its first block read
    with open(member, "ab") as file:
        file.write(b"more")
    with pytest.raises(RuntimeError, match=r"member 'm.bin': .* 200004 bytes, not the 200000"):
        for chunk in chunks:
            got += chunk
    assert len(got) < int(response["Content-Length"])
    response.close()


@pytest.mark.parametrize(
    ("given", "why"), [(b"x" * 11, "gave more than the 10"), (b"x" * 9, "gave 9 bytes")]
)
def test_a_declared_size_is_held_to(given, why):
    response = stream_zip([("a.bin", iter([given]), {"size": 10, "compress": False})])
    with pytest.raises(ValueError, match=f"member 'a.bin': its source {why}"):
        b"".join(response)
    response.close()


@pytest.mark.parametrize("size", ["10", True, -1, 1.5])
def test_a_bad_size_option_is_refused(size):
    with pytest.raises(ValueError, match=r"member 'a\.bin': size must be an int >= 0"):
        stream_zip([("a.bin", iter([b"x"]), {"size": size})])
    with pytest.raises(ValueError, match=r"member 'b\.bin': size 3 is not its length 1"):
        stream_zip([("b.bin", b"x", {"size": 3})])
    with pytest.raises(ValueError, match=r"member 'c\.bin': compress must be True or False"):
        stream_zip([("c.bin", b"x", {"compress": "no"})])


def test_a_sized_producer_is_not_run_in_the_view(tmp_path):
    started = []

    def produce(out):
        started.append(True)
        out.write(b"12345")

    response = stream_zip([("p.bin", produce, {"size": 5, "compress": False})])
    assert not started  # zipstream-ng read unsized iterables of a sized archive whole, here
    data = b"".join(response)
    assert len(data) == int(response["Content-Length"])
    assert check_zip(data, tmp_path).read("p.bin") == b"12345"


def test_a_file_member_keeps_its_files_date_and_mode(tmp_path):
    member = tmp_path / "f.txt"
    member.write_bytes(b"file")
    member.chmod(0o640)
    when = datetime.datetime(2021, 3, 4, 5, 6, 8).timestamp()
    os.utime(member, (when, when))
    info = check_zip(b"".join(stream_zip([("f.txt", member)])), tmp_path).getinfo("f.txt")
    assert info.date_time == time.localtime(when)[:6]
    assert info.external_attr >> 16 == stat.S_IFREG | 0o640


def test_an_async_member_under_asgi_without_asgiref_313_is_refused(monkeypatch, caplog):
    from django_streamer import archive
    from tests.conftest import call_asgi

    monkeypatch.setattr(archive, "OWN_THREAD", False)  # as with asgiref 3.12 (Python 3.10)
    result = asyncio.run(call_asgi("/zip-files?async=1"))
    assert result.status == 500
    assert "member 'async.txt' is async, which under ASGI needs asgiref 3.13" in caplog.text


@pytest.mark.skipif(not OWN_THREAD, reason="asgiref < 3.13: asgiref's process-wide thread")
@pytest.mark.django_db
def test_an_async_members_orm_calls_run_on_a_thread_of_its_own():
    threads = []

    async def produce(out):
        def count():
            threads.append(threading.current_thread())
            return User.objects.count()

        await out.write(str(await sync_to_async(count)()))

    members = [("a.txt", produce), ("b.txt", produce)]
    opened = zipfile.ZipFile(io.BytesIO(b"".join(stream_zip(members))))
    assert opened.read("a.txt") == opened.read("b.txt") == b"0"
    # Not asgiref's one thread for the whole process (nor this one): one per member.
    assert len({id(thread) for thread in threads}) == 2
    assert all(thread.name.startswith("streamer-zip-member") for thread in threads)
