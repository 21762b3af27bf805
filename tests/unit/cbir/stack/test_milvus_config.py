from __future__ import annotations

from cbir.stack.services.milvus import render_config

TEMPLATE = """\
etcd:
  endpoints: localhost:{{ etcd_port(int): 2379 }}
  log:
    level: {{ etcd_log_level: info }} # comment stays
  data:
    dir: {{ etcd_data_dir }}
proxy:
  ip: # if not specify address, will use the first unicastable address as local ip
  port: {{ proxy_port(int): 19530 }}
  http:
    ip: keep-me
"""


def test_placeholders_take_our_values_or_their_defaults() -> None:
    rendered = render_config(TEMPLATE, {"etcd_port": "12379", "etcd_data_dir": "/data/etcd"})
    assert "endpoints: localhost:12379" in rendered
    assert "level: info # comment stays" in rendered
    assert "dir: /data/etcd" in rendered
    assert "port: 19530" in rendered
    assert "{{" not in rendered


def test_components_advertise_loopback_and_nested_ip_keys_are_untouched() -> None:
    rendered = render_config(TEMPLATE, {})
    assert "  ip: 127.0.0.1\n" in rendered
    assert "    ip: keep-me" in rendered
