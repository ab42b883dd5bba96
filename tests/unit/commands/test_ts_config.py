"""TorchServe's config.properties as `serve --ts-config` reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferline.commands.api_ports import ApiPorts
from inferline.commands.ts_config import ModelConfig, read_ts_config
from inferline.errors import InferlineError


def test_keys_addresses_models_and_continued_lines(tmp_path: Path) -> None:
    path = tmp_path / "config.properties"
    path.write_text(
        "# TorchServe's config\n"
        "inference_address=http://0.0.0.0:8080\n"
        "management_address: http://127.0.0.1:8081\n"
        "metrics_address=http://127.0.0.1:8082\n"
        "model_store=/models\n"
        "load_models=mnist.mar, resnet=resnet-18.mar\n"
        "default_workers_per_model=2\n"
        "job_queue_size=50\n"
        'models={"mnist": {"1.0": {"batchSize": 8, \\\n'
        '    "maxBatchDelay": 50, "minWorkers": 1, "maxWorkers": 3}}}\n'
        "vmargs=-Xmx4g\n"
        "! another comment\n"
        "number_of_netty_threads=4\n"
    )
    config = read_ts_config(str(path))
    assert (config.host, config.port) == ("0.0.0.0", 8080)
    assert (config.management_host, config.management_port, config.metrics_port) == ("127.0.0.1", 8081, 8082)
    assert config.model_store == "/models" and config.load_models == ["mnist.mar", "resnet=resnet-18.mar"]
    assert (config.workers, config.max_queue) == (2, 50)
    assert config.models == {"mnist": ModelConfig(8, 50, 1, 3)}
    assert config.ignored == ["number_of_netty_threads", "vmargs"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "inference_address=https://0.0.0.0:8443",
            r"inference_address=https://0.0.0.0:8443; inferline serves plain http",
        ),
        ("management_address=localhost", r"management_address=localhost; expected http://HOST:PORT"),
        (
            "default_workers_per_model=two",
            r"default_workers_per_model='two'; expected a whole number of at least 0",
        ),
        ("models={oops", r"models is not valid JSON"),
        ('models={"m": {"1.0": {"batchSize": 0}}}', r"models: m: batchSize=0; expected a whole number"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "config.properties"
    path.write_text(line + "\n")
    with pytest.raises(InferlineError, match=rf"^serve: --ts-config {path}: {message}"):
        read_ts_config(str(path))
    with pytest.raises(InferlineError, match=r"^serve: --ts-config nowhere.properties: no such file$"):
        read_ts_config("nowhere.properties")


def test_port_split_rules() -> None:
    with pytest.raises(InferlineError, match=r"--port and --management-port are both 8080"):
        ApiPorts("127.0.0.1", 8080, management_port=8080).check(None)
    with pytest.raises(InferlineError, match=r"binding 0.0.0.0 exposes the management API"):
        ApiPorts("0.0.0.0", 8080).check(None)
    ApiPorts("0.0.0.0", 8080, management_port=8081).check(None)  # management stays on 127.0.0.1
    with pytest.raises(InferlineError, match=r"management_address 10.0.0.5 exposes the management API"):
        ApiPorts("127.0.0.1", 8080, management_port=8081, management_host="10.0.0.5").check(None)
