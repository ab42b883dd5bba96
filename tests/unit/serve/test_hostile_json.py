"""Random JSON at /predictions and /v2/.../infer: never a 5xx, always a JSON error body.

The models are plain scikit-learn estimators that never raise on finite numbers of the right
shape, so any 5xx here is the server's fault, not "a model's own exception".
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from inferline.examples.iris import FEATURES
from inferline.models.base import LoadedModel
from inferline.models.sklearn import SklearnHandler
from inferline.serve.app import create_app
from inferline.serve.state import ServerConfig, ServerState
from inferline.serve.values import DATATYPES

IRIS = load_iris()

scalars = (
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.text(max_size=4)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=24,
)
feature_names = st.sampled_from([*FEATURES, "input", "x", ""])
rows = st.lists(st.lists(scalars | st.floats(-10, 10), min_size=3, max_size=5), min_size=1, max_size=4)
named_rows = st.lists(
    st.dictionaries(feature_names, scalars | st.floats(-10, 10), max_size=5), min_size=1, max_size=3
)
predictions_bodies = (
    json_values | rows | named_rows | st.fixed_dictionaries({"instances": rows | named_rows | json_values})
)
tensors = st.fixed_dictionaries(
    {
        "name": feature_names | json_values,
        "shape": st.lists(st.integers(-1, 5), max_size=3) | json_values,
        "datatype": st.sampled_from([*DATATYPES, "BYTES", "fp32"]) | json_values,
        "data": st.lists(scalars | st.floats(-300, 300), max_size=8) | rows | json_values,
    }
)
v2_bodies = json_values | st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=5) | json_values},
    optional={"outputs": json_values | st.lists(st.fixed_dictionaries({"name": json_values}), max_size=3)},
)


@pytest.fixture(scope="module")
def app() -> Any:
    server = ServerState(ServerConfig())
    handler = SklearnHandler()
    model = LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target)
    server.models.add(LoadedModel("iris", "1", "mem://iris", handler, model, inputs=list(FEATURES)))
    server.models.add(LoadedModel("bare", "1", "mem://bare", handler, model))
    return create_app(server)


def post(app: Any, path: str, body: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, content=json.dumps(body).encode())

    return asyncio.run(go())


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        error = response.json()
        if "error" in error:  # /v2 routes
            assert isinstance(error["error"], str) and error["error"]
        else:
            assert error["code"] == response.status_code and error["message"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=predictions_bodies, model=st.sampled_from(["iris", "bare"]))
def test_random_json_at_predictions_is_never_a_5xx(app: Any, body: Any, model: str) -> None:
    check(post(app, f"/predictions/{model}", body))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=v2_bodies, model=st.sampled_from(["iris", "bare"]))
def test_random_json_at_v2_infer_is_never_a_5xx(app: Any, body: Any, model: str) -> None:
    check(post(app, f"/v2/models/{model}/infer", body))
