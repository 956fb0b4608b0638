async def test_admin_smoke(rotor):
    admin = await rotor.client(grants=["client_credentials"], admin=True, scopes=[])
    token = (await rotor.token({"grant_type": "client_credentials"}, admin.auth)).json()["access_token"]
    h = {"Authorization": f"Bearer {token}"}
    r = await rotor.http.post("/admin/users", json={"username": "bob", "password": "longpassword"}, headers=h)
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    r = await rotor.http.get(f"/admin/users/{uid}", headers=h)
    assert r.status_code == 200 and r.json()["disabled"] is False, r.text
    r = await rotor.http.post("/admin/clients", json={"name": "app", "grant_types": ["password", "refresh_token"], "scopes": ["read"]}, headers=h)
    assert r.status_code == 201, r.text
    from tests.helpers import RegisteredClient
    app = RegisteredClient(r.json()["client_id"], r.json()["client_secret"])
    login = await rotor.login(app, "bob", "longpassword")
    assert login.status_code == 200, login.text
    r = await rotor.http.get(f"/admin/users/{uid}/families", headers=h)
    assert r.status_code == 200 and len(r.json()["items"]) == 1, r.text
    fid = r.json()["items"][0]["id"]
    r = await rotor.http.get(f"/admin/families/{fid}", headers=h)
    assert r.status_code == 200 and r.json()["chain"][0]["generation"] == 1, r.text
    r = await rotor.http.patch(f"/admin/users/{uid}", json={"disabled": True}, headers=h)
    assert r.status_code == 200 and r.json()["disabled"] is True, r.text
    r = await rotor.http.get("/admin/events", headers=h)
    assert r.status_code == 200, r.text
    assert [e["type"] for e in r.json()["items"]] == ["user_disabled", "family_revoked"], r.json()
    r = await rotor.http.get("/admin/keys", headers=h)
    assert r.status_code == 200 and len(r.json()["items"]) == 2, r.text
    r = await rotor.http.post("/admin/keys/rotate", headers=h)
    assert r.status_code == 409, r.text
    r = await rotor.http.post("/admin/keys/rotate", json={"force": True}, headers=h)
    assert r.status_code == 200, r.text
    r = await rotor.http.get("/admin/users/not-a-uuid", headers=h)
    assert r.status_code == 400, r.text
    r = await rotor.http.get("/admin/users/00000000-0000-0000-0000-000000000000", headers=h)
    assert r.status_code == 404, r.text
    r = await rotor.http.get("/admin/keys")
    assert r.status_code == 401, r.text


async def test_metrics_smoke(rotor):
    client = await rotor.client()
    await rotor.user()
    assert (await rotor.login(client)).status_code == 200
    r = await rotor.http.get("/metrics")
    assert r.status_code == 200
    assert 'rotor_tokens_issued_total{grant="password"}' in r.text, r.text[:3000]
    assert "rotor_http_requests_total" in r.text
