"""MultiRead's wire format and chunking, without a server.

The functional tests send it to a real ZooKeeper; these pin the corner cases
a healthy server rarely produces: a node with null data, per-op errors other
than NoNode, a reply that does not match the request, a path over budget.
"""

from __future__ import annotations

import struct

import pytest
from kazoo.exceptions import MarshallingError, NoAuthError, NoNodeError
from kazoo.protocol.serialization import GetData, multiheader_struct, stat_struct

from servicegroup.drivers.zookeeper import MULTI_READ_OP_COST, MultiRead, chunks


def stat(mtime: int, mzxid: int) -> bytes:
    # czxid, mzxid, ctime, mtime, version, cversion, aversion, ephemeralOwner,
    # dataLength, numChildren, pzxid
    return stat_struct.pack(1, mzxid, 3, mtime, 4, 5, 6, 7, 8, 9, 10)


def data_result(data: bytes | None, mtime: int, mzxid: int = 2) -> bytes:
    size = -1 if data is None else len(data)
    body = struct.pack("!i", size) + (data or b"")
    return multiheader_struct.pack(4, False, 0) + body + stat(mtime, mzxid)


def error_result(code: int) -> bytes:
    return multiheader_struct.pack(-1, False, code) + struct.pack("!i", code)


DONE = multiheader_struct.pack(-1, True, -1)


def test_request_is_kazoos_getdata_ops_framed_as_a_multi() -> None:
    paths = ["/sg/nova/host-1", "/sg/nova/h%C3%A9"]
    expected = b"".join(
        multiheader_struct.pack(4, False, -1) + GetData(p, None).serialize() for p in paths
    )
    assert MultiRead(paths).serialize() == expected + DONE
    assert MultiRead.type == 22


def test_reply_gives_data_mtime_and_mzxid_or_each_ops_own_error() -> None:
    reply = (
        b"junk"
        + data_result(b'{"uuid": "u1"}', 1_700_000_000_123, mzxid=0x1_0000_0007)
        + error_result(NoNodeError.code)
        + data_result(None, 42)
        + error_result(NoAuthError.code)
        + DONE
    )
    got = MultiRead(["/a", "/b", "/c", "/d"]).deserialize(reply, 4)
    assert got[0] == (b'{"uuid": "u1"}', 1_700_000_000_123, 0x1_0000_0007)
    assert isinstance(got[1], NoNodeError)
    assert got[2] == (b"", 42, 2)
    assert isinstance(got[3], NoAuthError)


def test_a_reply_that_does_not_match_the_request_is_refused() -> None:
    reply = data_result(b"x", 1) + DONE
    with pytest.raises(MarshallingError, match="1 of 2"):
        MultiRead(["/a", "/b"]).deserialize(reply, 0)
    with pytest.raises(MarshallingError, match="type 5"):
        MultiRead(["/a"]).deserialize(multiheader_struct.pack(5, False, 0) + DONE, 0)


def test_chunks_keep_order_respect_the_budget_and_never_drop_a_path() -> None:
    paths = [f"/p{i:02d}" for i in range(10)]  # 4 characters each
    budget = 3 * (4 + MULTI_READ_OP_COST)
    assert chunks(paths, budget) == [paths[0:3], paths[3:6], paths[6:9], paths[9:10]]
    assert chunks([], budget) == []
    # A path bigger than the budget still goes, alone.
    huge = "/" + "x" * (2 * budget)
    assert chunks(["/a", huge, "/b"], budget) == [["/a"], [huge], ["/b"]]
