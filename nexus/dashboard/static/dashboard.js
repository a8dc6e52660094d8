// Nexus admin dashboard: small enhancements for every page (the pages work without them).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Forms that do something hard to undo ask first.
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  // Broadcast kinds as tabs: one form shown at a time.
  const tabs = Array.from(document.querySelectorAll(".tab[data-tab]"));
  tabs.forEach((tab) => {
    tab.addEventListener("click", (event) => {
      event.preventDefault();
      tabs.forEach((other) => {
        const selected = other === tab;
        other.setAttribute("aria-selected", selected ? "true" : "false");
        const form = document.getElementById("form-" + other.dataset.tab);
        if (form) form.classList.toggle("is-hidden", !selected);
      });
    });
  });

  // A live preview of each broadcast form, and a character counter (text only: never HTML).
  document.querySelectorAll("form.broadcast-form").forEach((form) => {
    const message = form.querySelector("[data-preview='message']");
    const target = form.querySelector("[data-preview='target']");
    const title = form.querySelector("[data-preview='title']");
    const counter = form.querySelector("[data-counter]");
    const out = (name) => form.querySelector("[data-preview-out='" + name + "']");
    const defaultTitle = out("title") ? out("title").textContent : "";
    const update = () => {
      const text = message.value.trim();
      const body = out("message");
      if (text) {
        body.textContent = text;
      } else {
        body.textContent = "";
        const hint = document.createElement("span");
        hint.className = "muted";
        hint.textContent = "Your message appears here.";
        body.appendChild(hint);
      }
      if (counter) counter.textContent = message.value.length + " / " + (message.maxLength > 0 ? message.maxLength : 2000);
      if (out("title")) out("title").textContent = (title && title.value.trim()) || defaultTitle;
      if (out("target")) out("target").textContent = target && target.value.trim() ? "→ " + target.value.trim() : "";
    };
    [message, target, title].forEach((input) => input && input.addEventListener("input", update));
    update();
  });
});
