"""The spool's record count, read incrementally (``Spool.depth`` and ``set_aside``)."""

import builtins
import json

from ivr.voice import spool as spool_module
from ivr.voice.spool import Spool


def test_depth_counts_records_across_appends_a_cut_line_a_replay_and_set_asides(tmp_path):
    spool = Spool(tmp_path / "spool")
    assert spool.depth() == 0 and spool.set_aside() == 0
    for n in range(3):
        spool.append({"n": n})
    assert spool.depth() == 3
    with open(spool.path, "ab") as handle:
        handle.write(b'{"cut sho')  # a crash in the middle of a write
    assert spool.depth() == 4  # a record cut short is still one waiting
    spool.append({"n": 3})      # starts on a line of its own
    assert spool.depth() == 5
    with open(spool.path, "ab") as handle:
        handle.write(b"\n\n")    # blank lines are no records
    assert spool.depth() == 5
    result = spool.replay(lambda record: "n" in record or (_ for _ in ()).throw(ValueError()))
    assert (result.read, result.applied, result.unreadable) == (5, 4, 1)
    assert spool.depth() == 0 and spool.set_aside() == 1
    spool.append({"n": 4})      # a new spool file in the old one's place
    spool.append({"n": 5})
    assert spool.depth() == 2


def test_asking_again_reads_only_what_was_appended_since(tmp_path, monkeypatch):
    spool = Spool(tmp_path / "spool")
    for n in range(2000):
        spool.append({"n": n, "caller": "+15550100" + str(n % 10) * 3})
    assert spool.depth() == 2000
    read = []

    class Recording:
        def __init__(self, handle):
            self.handle = handle

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def __iter__(self):
            for line in self.handle:
                read.append(len(line))
                yield line

        def read(self, size=-1):
            data = self.handle.read(size)
            read.append(len(data))
            return data

    monkeypatch.setattr(spool_module, "open", lambda *a, **k: Recording(builtins.open(*a, **k)),
                        raising=False)
    record = json.dumps({"n": 2000}).encode()
    spool.append({"n": 2000})
    assert spool.depth() == 2001
    # The new record, and the first bytes that tell the file is still the one counted:
    # not the 2,000 records before it.
    assert sum(read) <= spool_module.HEAD_SIZE + len(record) + 2


def test_a_new_spool_file_that_reuses_the_old_ones_inode_is_counted_afresh(tmp_path, monkeypatch):
    """A replay removes the spool file and the next record creates a new one, which the
    file system may give the removed file's inode number: the count must not carry on
    from where the old file's ended, as if the new file were the old one grown."""
    import os
    import types

    real_fstat = os.fstat
    # Every file the same device and inode, as a reused inode number looks.
    monkeypatch.setattr(os, "fstat", lambda fd: types.SimpleNamespace(
        st_dev=1, st_ino=1, st_size=real_fstat(fd).st_size))
    spool = Spool(tmp_path / "spool")
    for n in range(3):
        spool.append({"n": n, "pad": "x" * 50})
    assert spool.depth() == 3
    spool.replay(lambda record: True)
    for n in range(10):
        spool.append({"n": n, "pad": "y" * 10})
    assert spool.depth() == 10


def test_a_record_cut_short_by_a_crash_is_set_aside_with_one_log_line_not_a_traceback(
        tmp_path, caplog):
    """The README's expected case after a crash mid-write: `spool replay` (and the sender)
    say which record was set aside and why, in one line, not json's traceback, which read
    as if the replay itself had failed."""
    spool = Spool(tmp_path / "spool")
    spool.append({"n": 0})
    with open(spool.path, "ab") as handle:
        handle.write(b'{"kind": "tick')  # a crash in the middle of a write
    spool.append({"n": 1})
    with caplog.at_level("INFO", logger="ivr.spool"):
        result = spool.replay(lambda record: True)
    assert (result.read, result.applied, result.unreadable) == (3, 2, 1)
    assert spool.failed.read_text() == '{"kind": "tick\n'
    [logged] = [r for r in caplog.records if r.name == "ivr.spool"]
    assert logged.exc_info is None
    assert logged.getMessage() == ("spool record 2 is not a whole record (a write cut short "
                                   "by a crash): set aside in spool.failed.jsonl")
