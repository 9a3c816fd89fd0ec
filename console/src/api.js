// The public /v1 API with the key the person signed in with. The console has
// no other way in, so it can do nothing the API does not allow.

const KEY = "stolid.api_key";

export const key = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

/// An error from the API's JSON body: `message (code)`, e.g. "missing or invalid API key (unauthorized)".
export class ApiError extends Error {
  constructor(status, body) {
    const error = body && body.error;
    super(error ? `${error.message} (${error.code})` : `the server answered HTTP ${status}`);
    this.status = status;
    this.code = error ? error.code : null;
  }
}

function request(path, options = {}) {
  const headers = { Authorization: `Bearer ${key.get()}`, ...(options.headers || {}) };
  let body = options.body;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  }
  return fetch(path, { method: options.method || (body ? "POST" : "GET"), headers, body, signal: options.signal });
}

/// One call; its JSON body, or null for 204. Throws ApiError for any other status.
export async function api(path, options = {}) {
  const response = await request(path, options);
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/// A call answered with Server-Sent Events: `onEvent(name, data)` for each as it
/// arrives. An `error` event is thrown as an ApiError once the stream ends.
/// (EventSource cannot send the Authorization header, so this reads the body.)
export async function apiStream(path, json, onEvent, signal) {
  const response = await request(path, { json: { ...json, stream: true }, signal });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  let failure = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue; // a keep-alive comment
      const parsed = JSON.parse(data.join("\n"));
      if (name === "error") failure = new ApiError(null, parsed);
      else onEvent(name, parsed);
    }
  }
  if (failure) throw failure;
}
