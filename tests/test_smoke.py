async def test_login_and_refresh_smoke(rotor):
    client = await rotor.client()
    await rotor.user()
    response = await rotor.login(client)
    assert response.status_code == 200, response.text
    first = response.json()["refresh_token"]
    again = await rotor.http.post("/refresh", json={"refresh_token": first}, headers=client.auth)
    assert again.status_code == 200, again.text
    assert again.json()["refresh_token"] != first
    replay = await rotor.http.post("/refresh", json={"refresh_token": first}, headers=client.auth)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    latest = await rotor.http.post(
        "/refresh", json={"refresh_token": again.json()["refresh_token"]}, headers=client.auth
    )
    assert latest.status_code == 400, latest.text
