"""The test-suite itself refuses non-loopback connections (pyproject addopts: pytest-socket)."""

import socket

import pytest
from pytest_socket import SocketConnectBlockedError


def test_external_connect_is_blocked():
    with pytest.raises(SocketConnectBlockedError):
        socket.create_connection(("93.184.215.14", 443), timeout=1)


def test_offline_detection_needs_no_socket():
    from bench.env import network_available

    assert network_available() is False  # IQA_STUDY_OFFLINE=1 set by conftest: no probe is made


def test_loopback_is_allowed():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname(), timeout=2)
    cli.close()
    srv.close()
