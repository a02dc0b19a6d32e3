"""src/pretrained.py: which ImageNet weights --pretrained imagenet names, and a download that cannot happen said within
seconds (the probe: one HEAD request, under a deadline, no redirect followed). Tests never touch the network: the
servers here are local sockets."""
import socket
import threading
import time

import huggingface_hub
import pytest
import timm

from src import pretrained
from src.pretrained import HubWeights, PretrainedUnavailable, imagenet_weights, locate_imagenet_weights


def test_the_papers_imagenet_tags():
    assert imagenet_weights("resnet50") == "resnet50.tv_in1k"
    assert imagenet_weights("resnet101", 224) == "resnet101.tv_in1k"
    assert imagenet_weights("tresnet_m") == "tresnet_m.miil_in1k_448"  # 448 px, the default size
    assert imagenet_weights("tresnet_l", 224) == "tresnet_l.miil_in1k"
    assert imagenet_weights("resnet50.a1_in1k") == "resnet50.a1_in1k"  # a tag picks itself
    assert imagenet_weights("resnet18") == f"resnet18.{timm.models.get_pretrained_cfg('resnet18').tag}"


def test_unreachable_server_fails_fast(hub_cache, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    start = time.perf_counter()
    with pytest.raises(PretrainedUnavailable, match="cannot reach 127.0.0.1:9"):
        locate_imagenet_weights("tresnet_l", 448)
    assert time.perf_counter() - start < 5


PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture
def local_server():
    """Serve 127.0.0.1 on a free port with ``handle(conn)`` per connection, for at most 30 s; yield the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    held, stop = [], threading.Event()
    state = {"handle": lambda conn: None}

    def serve():
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)
            state["handle"](conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], state
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def test_a_server_that_accepts_but_never_speaks_tls_fails_within_seconds(hub_cache, monkeypatch, local_server):
    """A proxy or firewall that accepts the TCP connection and then says nothing: one bounded probe, no retries."""
    port, _ = local_server  # accepts and holds every connection, never answers
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"https://127.0.0.1:{port}")
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    start = time.perf_counter()
    with pytest.raises(PretrainedUnavailable, match=f"cannot reach 127.0.0.1:{port}"):
        locate_imagenet_weights("tresnet_l", 448)
    assert time.perf_counter() - start < pretrained._PROBE_DEADLINE_S + 2


def test_any_http_answer_counts_as_reachable(hub_cache, monkeypatch, local_server):
    """A server that answers (here a redirect, as the hub does) is reachable: the probe does not follow it."""
    port, state = local_server

    def answer(conn):
        conn.settimeout(2)
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/elsewhere\r\nContent-Length: 0\r\n\r\n")

    state["handle"] = answer
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    assert pretrained._download_blocker(HubWeights.of(imagenet_weights("tresnet_l", 448))) is None
