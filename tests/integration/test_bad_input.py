"""Bad input of every kind gets a 4xx problem-details answer, never a 500."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.conftest import Api

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=12,
)
TASK_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "title": JSON_VALUES, "description": JSON_VALUES, "deadline": JSON_VALUES,
        "budget": st.fixed_dictionaries({}, optional={"amount": JSON_VALUES | st.sampled_from(
            ["NaN", "Infinity", "-5", "0", "1e30", "12.345"]), "currency": JSON_VALUES}),
    },
)


def assert_problem(r, body) -> None:  # type: ignore[no-untyped-def]
    assert 400 <= r.status_code < 500 or r.status_code in (200, 201), (body, r.status_code, r.text)
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/problem+json"), r.text
        problem = r.json()
        assert {"type", "title", "status", "detail"} <= problem.keys()


def test_malformed_bodies(api: Api) -> None:
    c = api.client
    _, customer_h = api.user("customer")
    _, provider_h = api.user("provider")
    cases = [
        ("post", "/api/v1/accounts", {}, b"{not json"),
        ("post", "/api/v1/accounts", {}, b"[]"),
        ("post", "/api/v1/accounts", {}, b'{"email": 5}'),
        ("post", "/api/v1/sessions", {}, b'{"email": "a@example.com"}'),
        ("post", "/api/v1/tasks", customer_h, b'{"title": "x"}'),
        ("post", "/api/v1/tasks", customer_h, b'{"title": "Hello there", "description": "long enough text",'
                                               b' "deadline": "2001-01-01T00:00:00Z"}'),
        ("post", "/api/v1/tasks", customer_h, b'{"title": "Hello there", "description": "long enough text",'
                                               b' "deadline": "tomorrow"}'),
        ("post", "/api/v1/tasks", customer_h, b'{"title": "Hello there", "description": "long enough text",'
                                               b' "budget": {"amount": "-3", "currency": "USD"}}'),
        ("post", "/api/v1/tasks", customer_h, b'{"title": "Hello there", "description": "long enough text",'
                                               b' "budget": {"amount": "NaN", "currency": "USD"}}'),
        ("post", "/api/v1/tasks", customer_h, b'{"title": "Hello there", "description": "long enough text",'
                                               b' "budget": {"amount": "10", "currency": "dollars"}}'),
        ("post", "/api/v1/tasks", customer_h, b'{"title": "Hello there", "description": "long enough text",'
                                               b' "unexpected": 1}'),
        ("put", "/api/v1/providers/me", provider_h, b'{"headline": "x"}'),
        ("put", "/api/v1/providers/me", provider_h, json.dumps({
            "headline": "Dev", "description": "", "skills": [], "categories": ["no-such-category"],
            "languages": ["en"], "capacity": 1, "accepting_work": True}).encode()),
        ("put", "/api/v1/providers/me", provider_h, json.dumps({
            "headline": "Dev", "description": "", "skills": [], "categories": [], "languages": ["english"],
            "capacity": -1, "accepting_work": True}).encode()),
        ("put", "/api/v1/providers/me", provider_h, json.dumps({
            "headline": "Dev", "description": "", "skills": [], "categories": [], "languages": ["en"],
            "capacity": 1, "accepting_work": True, "hourly_rate": "-20"}).encode()),
        ("put", "/api/v1/providers/me", provider_h, json.dumps({  # a rate without its currency
            "headline": "Dev", "description": "", "skills": [], "categories": [], "languages": ["en"],
            "capacity": 1, "accepting_work": True, "hourly_rate": "20"}).encode()),
        ("put", "/api/v1/providers/me", provider_h, json.dumps({
            "headline": "Dev", "description": "", "skills": [], "categories": [], "languages": ["en"],
            "capacity": 1, "accepting_work": True, "hourly_rate": "20", "rate_currency": "euro"}).encode()),
        ("get", "/api/v1/tasks?limit=0", customer_h, None),
        ("get", "/api/v1/tasks?limit=abc", customer_h, None),
        ("get", "/api/v1/tasks?status=flying", customer_h, None),
        ("get", "/api/v1/tasks/not-a-uuid", customer_h, None),
        ("get", "/api/v1/offers?offset=-1", provider_h, None),
        ("post", "/api/v1/offers/not-a-uuid/accept", provider_h, None),
        ("delete", "/api/v1/tasks", customer_h, None),
    ]
    for method, path, headers, body in cases:
        r = c.request(method.upper(), path, headers={**headers, "content-type": "application/json"}, content=body)
        assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
        assert_problem(r, body)
        if r.status_code == 422:
            assert r.json()["errors"], r.text


def test_oversized_body_is_rejected(api: Api) -> None:
    _, customer_h = api.user("customer")
    r = api.client.post("/api/v1/tasks", headers={**customer_h, "content-type": "application/json"},
                        content=b'{"title": "big", "description": "' + b"x" * 2_000_000 + b'"}')
    assert r.status_code == 413
    assert_problem(r, "big")


def test_random_task_bodies_never_cause_a_server_error(api: Api) -> None:
    _, customer_h = api.user("customer")

    @hsettings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(TASK_LIKE)
    def check(body: dict) -> None:
        r = api.client.post("/api/v1/tasks", json=body, headers=customer_h)
        assert_problem(r, body)

    check()


def test_random_signup_bodies_never_cause_a_server_error(api: Api) -> None:
    @hsettings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.fixed_dictionaries({}, optional=dict.fromkeys(("email", "password", "role", "display_name", "referral_code"), JSON_VALUES)))
    def check(body: dict) -> None:
        assert_problem(api.client.post("/api/v1/accounts", json=body), body)

    check()
