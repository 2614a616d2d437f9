"""Company sign-in in a real headless Chromium (Debian's chromium and chromium-driver, through
selenium), against a running `llmlite dev` whose console signs people in through a real OpenID
Provider (npm `oidc-provider`, tests/oidc/provider.mjs).

Run by functions/gateway/tests/sso_browser.rs:
    LLMLITE_URL=http://127.0.0.1:4000 LLMLITE_ISSUER=http://127.0.0.1:4100 \
    LLMLITE_OTHER_KEY=<hash of somebody else's key> LLMLITE_OUT=/tmp/out python3 sso_browser.py
Walks it: an admin (alice, group llm-admins) lands on the admin console and signs out at the
provider too; a developer (bob, group developers) lands on his own page, creates a key, sees
its Claude Code set-up once, chats with it, cannot open another person's key (403) or give
himself a limit (403), and signs out. Prints one line per step and "N passed, N failed"; a
failed step leaves a screenshot and the page's HTML in LLMLITE_OUT. With LLMLITE_SCREENSHOTS
set, the sign-in and self-service pages are saved there (sign-in.png, self-service.png).
"""

import json
import os
import urllib.error
import urllib.parse
import urllib.request

from browser import chromium, run
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["LLMLITE_URL"].rstrip("/")
ISSUER = os.environ["LLMLITE_ISSUER"].rstrip("/")
OTHER_KEY = os.environ["LLMLITE_OTHER_KEY"]
OUT = os.environ.get("LLMLITE_OUT", "sso-browser-output")
SCREENSHOTS = os.environ.get("LLMLITE_SCREENSHOTS")
os.makedirs(OUT, exist_ok=True)

driver = chromium()
state = {}


def wait_for(path):
    WebDriverWait(driver, 15).until(lambda d: d.current_url.split("?")[0] == URL + path)


def session_cookie():
    found = [c for c in driver.get_cookies() if c["name"] == "llmlite_session"]
    return found[0]["value"] if found else None


def as_browser(method, path, form=None):
    """The same request the browser would make, with its session cookie: (status, body)."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(URL + path, data=data, method=method)
    request.add_header("Cookie", f"llmlite_session={session_cookie()}")
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def company_sign_in(account):
    driver.get(URL + "/ui")
    wait_for("/ui/login")
    driver.find_element(By.ID, "company-sign-in").click()
    WebDriverWait(driver, 15).until(lambda d: d.current_url.startswith(ISSUER + "/interaction/"))
    assert "Company sign-in" in driver.title, driver.title
    driver.find_element(By.ID, "login").send_keys(account)
    driver.find_element(By.ID, "password").send_keys("correct horse")
    driver.find_element(By.ID, "sign-in").click()


def sign_out():
    driver.find_element(By.CSS_SELECTOR, "nav form button").click()
    # Through the provider's end-session endpoint and back to the sign-in page.
    wait_for("/ui/login")
    assert "Sign in" in driver.find_element(By.TAG_NAME, "h2").text
    assert session_cookie() is None, driver.get_cookies()
    driver.get(URL + "/ui/keys")
    wait_for("/ui/login")


def the_sign_in_page_offers_the_company_account():
    driver.get(URL + "/ui/login")
    assert driver.find_element(By.ID, "company-sign-in").is_displayed()
    assert driver.find_elements(By.ID, "key"), "the break-glass form stays"
    if SCREENSHOTS:
        driver.save_screenshot(os.path.join(SCREENSHOTS, "sign-in.png"))


def an_admin_lands_on_the_admin_console():
    company_sign_in("alice")
    wait_for("/ui/keys")
    assert "Keys" in driver.find_element(By.TAG_NAME, "h2").text
    assert "Alice Admin" in driver.find_element(By.CSS_SELECTOR, "nav .who").text
    assert driver.find_elements(By.LINK_TEXT, "Users"), "an admin sees the admin pages"


def the_admin_signs_out_here_and_at_the_provider():
    sign_out()
    # Signed out at the provider too: the next company sign-in asks again.
    driver.find_element(By.ID, "company-sign-in").click()
    WebDriverWait(driver, 15).until(lambda d: d.current_url.startswith(ISSUER + "/interaction/"))
    driver.get(URL + "/ui/login")


def a_developer_lands_on_self_service():
    company_sign_in("bob")
    wait_for("/ui/me")
    assert "My keys" in driver.find_element(By.TAG_NAME, "h2").text
    assert not driver.find_elements(By.LINK_TEXT, "Users"), "no admin pages for a developer"
    assert "up to 2 live keys" in driver.find_element(By.ID, "policy").text


def creates_a_key_and_sees_its_claude_code_set_up_once():
    driver.find_element(By.ID, "key_alias").send_keys("bob-laptop")
    driver.find_element(By.ID, "create-key").click()
    WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.ID, "secret"))
    secret = driver.find_element(By.ID, "secret").get_attribute("value")
    assert secret.startswith("sk-"), secret
    claude = driver.find_element(By.ID, "snippet-claude-code").text
    assert f"export ANTHROPIC_BASE_URL={URL}" in claude, claude
    assert f"export ANTHROPIC_AUTH_TOKEN={secret}" in claude, claude
    settings = json.loads(driver.find_element(By.ID, "snippet-claude-settings").text)
    assert settings["env"]["ANTHROPIC_AUTH_TOKEN"] == secret, settings
    for snippet in ["snippet-openai", "snippet-codex", "snippet-curl"]:
        assert URL in driver.find_element(By.ID, snippet).text, snippet
    state["secret"] = secret
    driver.find_element(By.LINK_TEXT, "Back to my keys").click()
    wait_for("/ui/me")
    assert secret not in driver.page_source, "the key is shown once"
    assert "bob-laptop" in driver.page_source
    if SCREENSHOTS:
        driver.save_screenshot(os.path.join(SCREENSHOTS, "self-service.png"))


def chats_with_it():
    request = urllib.request.Request(
        URL + "/v1/chat/completions",
        data=json.dumps({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hello"}]}).encode(),
        headers={"Authorization": f"Bearer {state['secret']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        body = json.loads(response.read())
    assert body["choices"][0]["message"]["content"], body


def cannot_open_another_persons_key():
    driver.get(URL + "/ui/keys/" + OTHER_KEY)
    assert "not one of your keys" in driver.page_source, driver.page_source
    status, body = as_browser("GET", "/ui/keys/" + OTHER_KEY)
    assert status == 403, status
    assert "other-persons-key" not in body


def cannot_raise_his_own_limits():
    driver.get(URL + "/ui/me")
    csrf = driver.find_element(By.CSS_SELECTOR, "form input[name=csrf]").get_attribute("value")
    for form in [
        {"csrf": csrf, "key_alias": "big", "max_budget": "10000"},
        {"csrf": csrf, "key_alias": "big", "tier": "admin", "team_id": "team-dev"},
        {"csrf": csrf, "key_alias": "big", "tier": "none"},
    ]:
        status, body = as_browser("POST", "/ui/me/keys", form)
        assert status in (400, 403), (status, form)
    status, _ = as_browser("POST", "/ui/keys/new", {"csrf": csrf, "key_alias": "big", "tier": "admin"})
    assert status == 403, status
    driver.get(URL + "/ui/me")
    assert "big" not in driver.find_element(By.ID, "my-keys").text


def the_developer_signs_out():
    sign_out()


STEPS = [
    the_sign_in_page_offers_the_company_account,
    an_admin_lands_on_the_admin_console,
    the_admin_signs_out_here_and_at_the_provider,
    a_developer_lands_on_self_service,
    creates_a_key_and_sees_its_claude_code_set_up_once,
    chats_with_it,
    cannot_open_another_persons_key,
    cannot_raise_his_own_limits,
    the_developer_signs_out,
]

run(driver, STEPS, OUT)
