"""The admin console in a real headless Chromium (Debian's chromium and chromium-driver, driven
through WebDriver by selenium), against a running `llmlite dev`.

Run by functions/gateway/tests/console_browser.rs:
    LLMLITE_URL=http://127.0.0.1:4000 LLMLITE_KEY=sk-... LLMLITE_OUT=/tmp/out python3 console_browser.py
Walks an admin's morning: sign in with the master key, create a key with a budget in the
console, read its secret once, use it for three chats through the API, see its spend in the keys
table, see the last hour (with a streamed chat's time to first token) on the operations page,
block it there and see the next chat refused, sign out and see /ui refuse. Prints one line
per step and "N passed, N failed"; a failed step leaves a screenshot and the page's HTML in
LLMLITE_OUT. With LLMLITE_SCREENSHOTS set, the keys, spend and operations pages are also saved
there (keys.png, spend.png, operations.png).
"""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

from browser import chromium, run
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = os.environ["LLMLITE_URL"].rstrip("/")
KEY = os.environ["LLMLITE_KEY"]
OUT = os.environ.get("LLMLITE_OUT", "console-browser-output")
SCREENSHOTS = os.environ.get("LLMLITE_SCREENSHOTS")
os.makedirs(OUT, exist_ok=True)


def api(path, body, key):
    request = urllib.request.Request(
        URL + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def chat(key, text):
    return api("/v1/chat/completions", {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": text}]}, key)


driver = chromium()
state = {}


def wait_for(path):
    """Waits for a click's navigation to land on `path` (a click does not wait for it)."""
    WebDriverWait(driver, 15).until(lambda d: d.current_url == URL + path)


def sign_in():
    driver.get(URL + "/ui")
    assert driver.current_url.endswith("/ui/login"), driver.current_url
    driver.find_element(By.ID, "key").send_keys(KEY)
    driver.find_element(By.CSS_SELECTOR, "form.signin button").click()
    wait_for("/ui/keys")
    assert "Keys" in driver.find_element(By.TAG_NAME, "h2").text
    assert KEY not in driver.page_source
    cookies = driver.get_cookies()
    session = [c for c in cookies if c["name"] == "llmlite_session"]
    assert session and session[0]["httpOnly"], cookies
    assert KEY not in session[0]["value"]


def create_a_team():
    driver.find_element(By.LINK_TEXT, "Teams").click()
    wait_for("/ui/teams")
    driver.find_element(By.ID, "id").send_keys("browsers")
    driver.find_element(By.ID, "max_budget").send_keys("20")
    driver.find_element(By.CSS_SELECTOR, "form.signin button").click()
    wait_for("/ui/teams/browsers")
    assert "Team browsers" in driver.find_element(By.TAG_NAME, "h2").text


def create_key_with_budget():
    driver.find_element(By.LINK_TEXT, "New key").click()
    wait_for("/ui/keys/new")
    driver.find_element(By.ID, "key_alias").send_keys("browser-made")
    driver.find_element(By.ID, "team_id").send_keys("browsers")
    driver.find_element(By.ID, "max_budget").send_keys("5")
    driver.find_element(By.CSS_SELECTOR, "form.signin button").click()
    # The answer stays on /ui/keys/new: wait for the new page's secret field.
    WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.ID, "secret"))
    assert "Key created" in driver.find_element(By.TAG_NAME, "h2").text, driver.page_source


def read_the_secret_once():
    secret = driver.find_element(By.ID, "secret").get_attribute("value")
    assert secret.startswith("sk-"), secret
    state["secret"] = secret
    driver.get(URL + "/ui/keys")
    assert secret not in driver.page_source
    assert "browser-made" in driver.page_source


def three_chats():
    for n in range(3):
        status, body = chat(state["secret"], f"chat number {n}")
        assert status == 200, (status, body)


def spend_on_the_keys_page():
    # Settlement follows each answer by a database round trip: give it a moment.
    for _ in range(50):
        driver.get(URL + "/ui/keys?q=browser-made")
        row = driver.find_element(By.CSS_SELECTOR, "tr[data-token]")
        budget = row.find_elements(By.TAG_NAME, "td")[4].text
        if not budget.startswith("$0 "):
            break
        time.sleep(0.1)
    assert budget.startswith("$") and " of $5" in budget and not budget.startswith("$0 "), budget
    assert "team browsers" in row.text, row.text
    if SCREENSHOTS:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        driver.get(URL + "/ui/keys")
        driver.save_screenshot(os.path.join(SCREENSHOTS, "keys.png"))


def run_the_rollup():
    env = dict(os.environ, DATABASE_URL=os.environ["LLMLITE_DATABASE_URL"], LITELLM_MASTER_KEY=KEY)
    done = subprocess.run([os.environ["LLMLITE_BIN"], "rollup"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def spend_on_the_key_detail():
    driver.get(URL + "/ui/keys?q=browser-made")
    driver.find_element(By.LINK_TEXT, "browser-made").click()
    WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.ID, "verdict"))
    requests = driver.find_elements(By.CSS_SELECTOR, "table.requests tbody tr")
    assert len(requests) == 3, driver.page_source
    limits = driver.find_element(By.CSS_SELECTOR, "table.limits").text
    assert " of $5" in limits and "team" in limits, limits
    assert "No limit would refuse" in driver.find_element(By.ID, "verdict").text


def spend_in_the_chart():
    driver.find_element(By.LINK_TEXT, "Spend").click()
    wait_for("/ui/spend")
    Select(driver.find_element(By.ID, "group")).select_by_value("team")
    driver.find_element(By.CSS_SELECTOR, "form.filters button").click()
    # The new page (not the one the click was on) with its chart drawn: the chart is fetched
    # and drawn after the page loads.
    WebDriverWait(driver, 15).until(
        lambda d: "group=team" in d.current_url
        and d.find_elements(By.CSS_SELECTOR, "figure#chart[data-drawn=true] rect.bar")
    )
    bars = driver.find_elements(By.CSS_SELECTOR, "figure#chart rect.bar")
    assert bars, driver.page_source
    assert "browsers" in driver.find_element(By.ID, "chart").text, driver.find_element(By.ID, "chart").text
    total = driver.find_element(By.ID, "total-spend").text
    assert total.startswith("$") and total != "$0", total
    if SCREENSHOTS:
        driver.save_screenshot(os.path.join(SCREENSHOTS, "spend.png"))


def streamed_chat(key, text):
    request = urllib.request.Request(
        URL + "/v1/chat/completions",
        data=json.dumps({"model": "claude-haiku-4-5", "stream": True,
                         "messages": [{"role": "user", "content": text}]}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read().decode()


def the_last_hour_on_the_operations_page():
    status, body = streamed_chat(state["secret"], "a streamed one")
    assert status == 200 and "[DONE]" in body, (status, body[-200:])
    # Four settled (three chats and the stream): give the last settlement a moment.
    for _ in range(50):
        driver.find_element(By.LINK_TEXT, "Operations").click()
        wait_for("/ui/operations")
        rows = driver.find_elements(By.CSS_SELECTOR, "table.operations tbody tr[data-model='claude-haiku-4-5'] td")
        if rows and rows[1].text == "4" and rows[6].text == "1":
            break
        time.sleep(0.2)
    cells = [td.text for td in rows]
    assert cells[0] == "claude-haiku-4-5", cells
    assert cells[1] == "4", cells          # requests
    assert cells[3].endswith("ms") or cells[3].endswith(" s"), cells   # p50
    assert cells[5].endswith("ms") or cells[5].endswith(" s"), cells   # TTFT p50, from the stream
    assert cells[6] == "1", cells          # streamed
    assert cells[7] == "0.0%", cells       # errors
    total = driver.find_element(By.CSS_SELECTOR, "table.operations tr.total").text
    assert total.startswith("All models"), total
    if SCREENSHOTS:
        driver.save_screenshot(os.path.join(SCREENSHOTS, "operations.png"))


def block_and_see_the_next_chat_refused():
    driver.get(URL + "/ui/keys?q=browser-made")
    driver.find_element(By.CSS_SELECTOR, "button[value=block]").click()
    wait_for("/ui/keys")
    status, body = chat(state["secret"], "after the block")
    assert status == 401, (status, body)
    driver.get(URL + "/ui/keys?q=browser-made")
    assert driver.find_element(By.CSS_SELECTOR, "td.status-blocked").text == "blocked"


def sign_out_and_see_ui_refuse():
    driver.find_element(By.CSS_SELECTOR, "nav form button").click()
    WebDriverWait(driver, 15).until(lambda d: d.current_url.startswith(URL + "/ui/login"))
    assert "You are signed out" in driver.page_source
    driver.get(URL + "/ui/keys")
    assert driver.current_url.endswith("/ui/login"), driver.current_url
    assert not [c for c in driver.get_cookies() if c["name"] == "llmlite_session"]


STEPS = [
    sign_in,
    create_a_team,
    create_key_with_budget,
    read_the_secret_once,
    three_chats,
    spend_on_the_keys_page,
    run_the_rollup,
    spend_on_the_key_detail,
    spend_in_the_chart,
    the_last_hour_on_the_operations_page,
    block_and_see_the_next_chat_refused,
    sign_out_and_see_ui_refuse,
]

run(driver, STEPS, OUT)
