async def test_introspect_and_revoke_smoke(rotor):
    client = await rotor.client()
    gateway = await rotor.client(grants=[], introspect=True)
    await rotor.user()
    body = (await rotor.login(client)).json()
    r = await rotor.http.post(
        "/introspect", data={"token": body["access_token"]}, headers=gateway.auth
    )
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True, r.json()
    assert r.json()["username"] == "alice"
    r = await rotor.http.post(
        "/introspect", data={"token": body["refresh_token"]}, headers=gateway.auth
    )
    assert r.json()["active"] is True, r.json()
    r = await rotor.http.post("/revoke", data={"token": body["access_token"]}, headers=client.auth)
    assert r.status_code == 200 and r.content == b"", r.text
    r = await rotor.http.post(
        "/introspect", data={"token": body["access_token"]}, headers=gateway.auth
    )
    assert r.json() == {"active": False}
    r = await rotor.http.post("/revoke", data={"token": body["refresh_token"]}, headers=client.auth)
    assert r.status_code == 200
    r = await rotor.http.post(
        "/introspect", data={"token": body["refresh_token"]}, headers=gateway.auth
    )
    assert r.json() == {"active": False}
    r = await rotor.http.post("/introspect", data={"token": "garbage"}, headers=client.auth)
    assert r.status_code == 401
