async def test_login_smoke(rotor):
    client = await rotor.client()
    await rotor.user()
    response = await rotor.login(client)
    assert response.status_code == 200, response.text
