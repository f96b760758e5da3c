// emollm serve: hands the microphone's samples (mono, the AudioContext's rate) to the page, 128 at a time.
"use strict";

class PCMCapture extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
}

registerProcessor("pcm-capture", PCMCapture);
