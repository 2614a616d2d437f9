"""Approves `llmlite login` in a real headless Chromium: opens the verification URL the command
printed, signs in there with the company account (the real OpenID Provider's form) and clicks
Approve. Run by functions/gateway/tests/device_login.rs:
    LLMLITE_URL=... LLMLITE_ISSUER=... LLMLITE_VERIFY=<verification_uri_complete> \
    LLMLITE_ACCOUNT=bob LLMLITE_OUT=/tmp/out python3 device_browser.py
"""

import os

from browser import chromium, run
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["LLMLITE_URL"].rstrip("/")
ISSUER = os.environ["LLMLITE_ISSUER"].rstrip("/")
VERIFY = os.environ["LLMLITE_VERIFY"]
ACCOUNT = os.environ["LLMLITE_ACCOUNT"]
OUT = os.environ.get("LLMLITE_OUT", "device-browser-output")
os.makedirs(OUT, exist_ok=True)
driver = chromium()


def signed_out_the_link_asks_for_the_company_sign_in():
    driver.get(VERIFY)
    WebDriverWait(driver, 15).until(lambda d: d.current_url.startswith(URL + "/ui/login"))
    driver.find_element(By.ID, "company-sign-in").click()
    WebDriverWait(driver, 15).until(lambda d: d.current_url.startswith(ISSUER + "/interaction/"))
    driver.find_element(By.ID, "login").send_keys(ACCOUNT)
    driver.find_element(By.ID, "sign-in").click()


def back_on_the_approval_page_with_the_code():
    WebDriverWait(driver, 15).until(lambda d: d.current_url.startswith(URL + "/ui/device"))
    code = VERIFY.split("user_code=")[1]
    assert driver.find_element(By.ID, "user_code").get_attribute("value") == code


def approves():
    driver.find_element(By.ID, "approve").click()
    WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.ID, "approved"))


run(driver, [
    signed_out_the_link_asks_for_the_company_sign_in,
    back_on_the_approval_page_with_the_code,
    approves,
], OUT)
