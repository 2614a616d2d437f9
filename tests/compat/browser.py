"""What the browser tests share: a headless Debian Chromium driven through selenium, and the
step runner that prints one line per step and "N passed, N failed", leaving a failed step's
screenshot and HTML in the output folder."""

import os
import sys
import traceback

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def chromium():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    return driver


def run(driver, steps, out):
    """Runs `steps` in order, stopping at the first failure; exits the process with the result."""
    passed = failed = 0
    for step in steps:
        try:
            step()
            passed += 1
            print(f"ok   {step.__name__}")
        except Exception:
            failed += 1
            print(f"FAIL {step.__name__}")
            traceback.print_exc()
            shot = os.path.join(out, f"{step.__name__}.png")
            driver.save_screenshot(shot)
            with open(os.path.join(out, f"{step.__name__}.html"), "w") as page:
                page.write(driver.page_source)
            print(f"     screenshot: {shot}")
            break
    driver.quit()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or passed != len(steps) else 0)
