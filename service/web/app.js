// The search page: plain JavaScript, no build step. Talks to POST /search and shows the results.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("search-form");
const results = $("results");
const statusLine = $("status");
const imageInput = $("image");
const drop = $("drop");
const keyInput = $("api-key");
let droppedImage = null;
const objectUrls = [];

keyInput.value = localStorage.getItem("tuwen-api-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("tuwen-api-key", keyInput.value));

function authHeaders() {
  return keyInput.value ? { Authorization: "Bearer " + keyInput.value } : {};
}

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

function useImage(file) {
  droppedImage = file || null;
  $("drop-label").textContent = file ? "图片: " + file.name : "拖入图片 / drop an image";
  $("clear-image").hidden = !file;
}

drop.addEventListener("click", () => imageInput.click());
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") imageInput.click(); });
imageInput.addEventListener("change", () => useImage(imageInput.files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) useImage(e.dataTransfer.files[0]);
});
$("clear-image").addEventListener("click", () => { imageInput.value = ""; useImage(null); });

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("query").value.trim();
  const target = $("target").value;
  const topK = $("top-k").value || "12";
  if (!text && !droppedImage) { setStatus("请输入查询或拖入图片 — type a query or drop an image", true); return; }
  let request;
  if (droppedImage) {
    const body = new FormData();
    body.append("image", droppedImage);
    if (text) body.append("text", text);
    body.append("target", target);
    body.append("top_k", topK);
    request = { method: "POST", headers: authHeaders(), body };
  } else {
    request = {
      method: "POST",
      headers: { ...authHeaders(), "Content-Type": "application/json" },
      body: JSON.stringify({ text, target, top_k: Number(topK) }),
    };
  }
  setStatus("搜索中… searching");
  const started = performance.now();
  try {
    const response = await fetch("/search", request);
    const payload = await response.json();
    if (!response.ok) { setStatus(`${payload.code}: ${payload.message}`, true); return; }
    render(payload);
    const ms = Math.round(performance.now() - started);
    setStatus(`${payload.results.length} 个结果 results · ${ms} ms · model ${payload.model}`);
  } catch (err) {
    setStatus("请求失败 request failed: " + err, true);
  }
});

function render(payload) {
  objectUrls.splice(0).forEach((u) => URL.revokeObjectURL(u));
  results.replaceChildren();
  results.className = payload.target === "text" ? "texts" : "";
  for (const hit of payload.results) {
    const card = document.createElement("article");
    card.className = "card result";
    card.dataset.id = hit.id;
    if (payload.target === "image") {
      const img = document.createElement("img");
      img.alt = hit.id;
      card.append(img);
      loadThumbnail(img, hit.thumbnail_url);
    } else {
      const caption = document.createElement("div");
      caption.className = "caption";
      caption.textContent = hit.text;
      card.append(caption);
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    const id = document.createElement("span");
    id.className = "id";
    id.textContent = hit.id;
    id.title = JSON.stringify(hit.metadata);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    meta.append(id, score);
    card.append(meta);
    results.append(card);
  }
}

// Thumbnails are fetched (not <img src>) so the API key header goes with them.
async function loadThumbnail(img, url) {
  try {
    const response = await fetch(url, { headers: authHeaders() });
    if (!response.ok) return;
    const objectUrl = URL.createObjectURL(await response.blob());
    objectUrls.push(objectUrl);
    img.src = objectUrl;
  } catch (err) {
    img.alt = "thumbnail unavailable";
  }
}
