"use strict";
// voxtrace page: upload or record a clip, POST it to /api/predict, show the answer.

const $ = (id) => document.getElementById(id);
let recorder = null;

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("status").textContent = "";
}

function renderBars(probabilities, label) {
  const bars = $("bars");
  bars.replaceChildren();
  for (const [name, p] of Object.entries(probabilities)) {
    const row = document.createElement("div");
    row.className = "bar" + (name === label ? " top" : "");
    row.setAttribute("role", "listitem");
    row.dataset.class = name;
    const title = document.createElement("span");
    title.textContent = name;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = (100 * p).toFixed(1) + "%";
    track.appendChild(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = (100 * p).toFixed(1) + "%";
    row.append(title, track, value);
    bars.appendChild(row);
  }
}

function showImage(id, b64) {
  const img = $(id);
  img.hidden = !b64;
  if (b64) img.src = "data:image/png;base64," + b64;
}

function render(answer) {
  $("label").textContent = answer.label;
  $("confidence").textContent = "(" + (100 * answer.probabilities[answer.label]).toFixed(1) + "% sure)";
  $("meta").textContent = `${answer.filename}: ${answer.duration_s.toFixed(2)} s, ` +
    `${answer.models} model(s), ${answer.checkpoints} checkpoint(s)`;
  renderBars(answer.probabilities, answer.label);
  showImage("spectrogram", answer.spectrogram_png);
  showImage("saliency", answer.saliency_png);
  $("saliency-method").textContent = answer.saliency_method === "gradcam" ? "(Grad-CAM)" :
    answer.saliency_method === "ig" ? "(integrated gradients)" : "";
  $("result").hidden = false;
  $("status").textContent = "Done.";
}

async function attribute(file) {
  $("error").hidden = true;
  $("result").hidden = true;
  $("status").textContent = `Analysing ${file.name}...`;
  const body = new FormData();
  body.append("file", file, file.name);
  let response;
  try {
    response = await fetch("/api/predict?images=true", { method: "POST", body });
  } catch (err) {
    showError("The server could not be reached: " + err);
    return;
  }
  let answer;
  try {
    answer = await response.json();
  } catch (err) {
    showError(`The server answered ${response.status} without a readable message.`);
    return;
  }
  if (!response.ok) {
    showError(answer.detail || `The server answered ${response.status}.`);
    return;
  }
  render(answer);
}

$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) {
    showError("Choose an audio file first.");
    return;
  }
  attribute(file);
});

$("record").addEventListener("click", async () => {
  if (recorder && recorder.state === "recording") {
    recorder.stop();
    return;
  }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    showError("This browser cannot record audio here (recording needs MediaRecorder on localhost or HTTPS).");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    showError("No microphone access: " + err.message);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
  recorder.addEventListener("stop", () => {
    stream.getTracks().forEach((track) => track.stop());
    $("record").textContent = "Record from microphone";
    $("record").classList.remove("recording");
    $("record-state").textContent = "";
    const type = recorder.mimeType || "audio/webm";
    const extension = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
    attribute(new File(chunks, "recording." + extension, { type }));
  });
  recorder.start();
  $("record").textContent = "Stop and attribute";
  $("record").classList.add("recording");
  $("record-state").textContent = "Recording...";
});

fetch("/api/info")
  .then((response) => response.json())
  .then((info) => {
    $("limits").textContent = `Classes: ${info.classes.join(", ")}. ${info.models.length} model(s), ` +
      `${info.checkpoints} checkpoint(s). Up to ${info.max_upload_mb} MB and ${info.max_duration_s} s per clip.`;
  })
  .catch(() => {});
