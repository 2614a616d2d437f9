// The console's one script: the Copy button beside a new key. Served by the console itself.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const button = document.getElementById("copy");
  if (!button) return;
  button.addEventListener("click", async () => {
    const field = document.getElementById(button.dataset.copy);
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
      button.textContent = "Copied";
    } catch (_) {
      button.textContent = "Select and copy";
    }
  });
});
