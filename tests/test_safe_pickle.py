"""The restricted unpickler: plain data loads, anything that names a callable is refused before it runs."""

from __future__ import annotations

import builtins
import copyreg
import os
import pickle
import re
import subprocess

import pytest

from vlrepro.data.real.errors import DatasetError
from vlrepro.data.real.safe_pickle import safe_load, safe_loads

PLAIN = {
    "refs": [{"ref_id": 1, "sentences": [{"sent": "left man", "tokens": ["left", "man"]}]}],
    "nums": (1, -2, 2**40, 3.5, True, False, None),
    "set": {1, 2, 3},
    "frozen": frozenset({"a"}),
    "empty_set": set(),
    "bytes": b"\x00\xffraw",
    "unicode": "caf\u00e9",
}


class _Evil:
    """Pickles as a call of ``fn(*args)``, the way an attacker's file would."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_round_trips(protocol):
    assert safe_loads(pickle.dumps(PLAIN, protocol=protocol)) == PLAIN


def test_python2_protocol2_str_keys_load():
    # What Python 2 writes for [{'split': 'train', 'ref_id': 7}] at protocol 2: SHORT_BINSTRING for str.
    data = b"\x80\x02]q\x00}q\x01(U\x05splitq\x02U\x05trainq\x03U\x06ref_idq\x04K\x07ua."
    assert safe_loads(data) == [{"split": "train", "ref_id": 7}]
    assert safe_loads(data, encoding="bytes") == [{b"split": b"train", b"ref_id": 7}]


def test_python2_protocol0_loads():
    data = b"(lp0\n(dp1\nS'split'\np2\nS'testA'\np3\nsS'sent_id'\np4\nL12L\nsa."
    assert safe_loads(data) == [{"split": "testA", "sent_id": 12}]


def _dangerous_calls(marker):
    cmd = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    return [
        (os.system, (cmd,)),
        (subprocess.call, (["touch", str(marker)],)),
        (builtins.eval, (code,)),
        (builtins.exec, (code,)),
        (builtins.getattr, (1, "real")),
        (builtins.open, (str(marker), "w")),
    ]


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_reduce_of_any_callable_is_refused_and_not_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    for fn, args in _dangerous_calls(marker):
        data = pickle.dumps([{"ok": 1}, _Evil(fn, *args)], protocol=protocol)
        with pytest.raises(DatasetError) as err:
            safe_loads(data, source="refs(unc).p")
        msg = str(err.value)
        assert msg.startswith("refs(unc).p:")
        # protocols < 3 write Python 2 module names (subprocess.call -> commands.call)
        named = re.search(r"refused to unpickle global (\w+)\.(\w+);", msg)
        assert named and named.group(2) == fn.__qualname__
        assert not marker.exists()


def test_hand_written_protocol0_os_system_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "refs(unc).p"
    path.write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p: refused to unpickle global os\.system"):
        safe_load(path)
    assert not marker.exists()


def test_inst_opcode_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    data = f"(S'touch {marker}'\nios\nsystem\n.".encode()
    with pytest.raises(DatasetError, match=r"global os\.system"):
        safe_loads(data)
    assert not marker.exists()


def test_extension_registry_goes_through_the_same_check(tmp_path):
    code = 0x7FFF_FFF0
    module = os.system.__module__  # what pickle records: "posix" on Linux
    copyreg.add_extension(module, "system", code)
    try:
        data = pickle.dumps(_Evil(os.system, f"touch {tmp_path / 'pwned'}"), protocol=2)
        assert b"\x84" in data  # EXT4 instead of GLOBAL
        with pytest.raises(DatasetError, match=r"global (os|posix)\.system"):
            safe_loads(data)
    finally:
        copyreg.remove_extension(module, "system", code)
    assert not (tmp_path / "pwned").exists()


def test_allowed_globals_accept_only_plain_arguments():
    # set() over a str would be harmless, but an allowed callable must not become a way to call
    # methods of whatever the stream builds; only the list/tuple shape pickle itself writes passes.
    with pytest.raises(DatasetError, match="builtins.set called with"):
        safe_loads(b"c__builtin__\nset\n(S'abc'\ntR.")
    with pytest.raises(DatasetError, match="_codecs.encode called with"):
        safe_loads(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")


def test_persistent_ids_are_refused():
    with pytest.raises(DatasetError, match="persistent id"):
        safe_loads(b"Pfoo\n.")


@pytest.mark.parametrize("data", [b"", b"\x80\x02]q\x00(K\x01", b"not a pickle at all"])
def test_broken_pickles_are_dataset_errors(data):
    with pytest.raises(DatasetError, match="x.p: not a readable pickle"):
        safe_loads(data, source="x.p")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(DatasetError, match="nothere.p"):
        safe_load(tmp_path / "nothere.p")
