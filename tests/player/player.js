// Plays ?src= with hls.js at ?rate=, muted, and reports what happened: a JSON
// verdict written into <pre id=result> and POSTed to /result?id=<id>, once,
// when the video ends, hls.js reports a fatal error, or ?timeout= (wall
// seconds) passes. tests/player.rs judges the figures; this page only measures.
(function () {
  'use strict';
  const q = new URLSearchParams(location.search);
  const src = q.get('src');
  const id = q.get('id') || '0';
  const rate = Number(q.get('rate') || '8');
  const timeoutMs = Number(q.get('timeout') || '60') * 1000;
  const video = document.getElementById('video');
  const t0 = performance.now();
  const now = () => Math.round(performance.now() - t0);

  const r = {
    src: src,
    hls_version: window.Hls ? window.Hls.version : null,
    rate_requested: rate,
    rate_set: null,
    verdict: null,
    reason: null,
    events: [],
    errors: [],
    fatal: null,
    playlist_duration: null,
    playlist_fragments: null,
    frags_loaded: 0,
    frag_sns: [],
    init_loaded: 0,
    eos: false,
    ended: false,
    duration: null,
    current_time: null,
    startup_ms: null,
    play_wall_ms: null,
    rate_achieved: null,
    max_stall_ms: 0,
    stalls: [],
    waiting: 0,
    seeks: [],
    pauses: 0,
    buffered: [],
    video_width: 0,
    video_height: 0,
    frames_total: null,
    frames_dropped: null,
    wall_ms: null,
  };
  let done = false;
  const ev = (name, extra) => {
    if (r.events.length < 200) {
      r.events.push(Object.assign({ ev: name, at_ms: now(), ct: +video.currentTime.toFixed(3) }, extra || {}));
    }
  };

  function finish(verdict, reason) {
    if (done) return;
    done = true;
    clearInterval(timer);
    r.verdict = verdict;
    r.reason = reason || null;
    r.duration = Number.isFinite(video.duration) ? video.duration : null;
    r.current_time = video.currentTime;
    r.ended = video.ended;
    r.rate_at_end = video.playbackRate;
    r.wall_ms = now();
    const b = video.buffered;
    for (let i = 0; i < b.length; i++) r.buffered.push([+b.start(i).toFixed(3), +b.end(i).toFixed(3)]);
    r.video_width = video.videoWidth;
    r.video_height = video.videoHeight;
    if (video.getVideoPlaybackQuality) {
      const pq = video.getVideoPlaybackQuality();
      r.frames_total = pq.totalVideoFrames;
      r.frames_dropped = pq.droppedVideoFrames;
    }
    const text = JSON.stringify(r);
    document.getElementById('result').textContent = text;
    fetch('/result?id=' + encodeURIComponent(id), { method: 'POST', body: text }).catch(() => {});
  }

  // Progress: a stall is wall time during which currentTime does not advance
  // while the video is neither paused nor ended, after playback started.
  let lastCt = -1;
  let lastAdvance = null;
  let firstPlayingAt = null;
  let firstCt = null;
  let stallFrom = null;
  const timer = setInterval(() => {
    const t = performance.now();
    const ct = video.currentTime;
    if (t - t0 > timeoutMs) {
      finish('timeout', 'no end within ' + timeoutMs / 1000 + ' s');
      return;
    }
    if (ct > lastCt) {
      if (firstCt === null && ct > 0) {
        firstCt = lastCt < 0 ? 0 : lastCt;
        r.startup_ms = Math.round(t - t0);
        firstPlayingAt = t;
      }
      if (stallFrom !== null && lastAdvance !== null && t - lastAdvance > 250) {
        r.stalls.push({ at: +lastCt.toFixed(3), ms: Math.round(t - lastAdvance) });
      }
      stallFrom = null;
      lastCt = ct;
      lastAdvance = t;
    } else if (firstPlayingAt !== null && !video.paused && !video.ended) {
      stallFrom = stallFrom === null ? lastAdvance : stallFrom;
      r.max_stall_ms = Math.max(r.max_stall_ms, Math.round(t - lastAdvance));
    }
  }, 50);

  if (!window.Hls) {
    finish('no-hls', 'hls.js did not load (tests/player/node_modules missing? run contrib/scripts/ensure-deps.sh)');
    return;
  }
  if (!Hls.isSupported()) {
    finish('unsupported', 'hls.js says this browser has no usable MediaSource');
    return;
  }
  r.mse = {
    h264_aac_mp4: MediaSource.isTypeSupported('video/mp4; codecs="avc1.640029,mp4a.40.2"'),
    h264_mp4: MediaSource.isTypeSupported('video/mp4; codecs="avc1.640029"'),
  };

  for (const name of ['loadedmetadata', 'canplay', 'playing', 'waiting', 'stalled', 'seeking', 'seeked', 'pause', 'ended', 'error', 'ratechange']) {
    video.addEventListener(name, () => {
      if (name === 'waiting') r.waiting++;
      if (name === 'pause' && !video.ended) r.pauses++;
      if (name === 'seeking') r.seeks.push({ from: +Math.max(lastCt, 0).toFixed(3), to: +video.currentTime.toFixed(3) });
      ev(name, name === 'error' && video.error ? { code: video.error.code, msg: video.error.message } : undefined);
      if (name === 'ended') {
        if (firstPlayingAt !== null) {
          const wall = performance.now() - firstPlayingAt;
          r.play_wall_ms = Math.round(wall);
          r.rate_achieved = +((video.currentTime - firstCt) / (wall / 1000)).toFixed(2);
        }
        finish('ended');
      }
      if (name === 'error') finish('media-error', video.error ? video.error.message : 'video error');
    });
  }

  const hls = new Hls({ debug: false });
  hls.on(Hls.Events.MANIFEST_PARSED, (_, d) => {
    ev('MANIFEST_PARSED', { levels: d.levels.length });
    // hls.js may reset the MediaSource to recover from an error, which aborts a
    // pending play(); autoplay then starts the new one. A stuck player ends in
    // the timeout verdict.
    video.play().catch((e) => ev('play-rejected', { msg: String(e).slice(0, 200) }));
  });
  hls.on(Hls.Events.LEVEL_LOADED, (_, d) => {
    r.playlist_duration = d.details.totalduration;
    r.playlist_fragments = d.details.fragments.length;
  });
  hls.on(Hls.Events.FRAG_LOADED, (_, d) => {
    if (d.frag.sn === 'initSegment') {
      r.init_loaded++;
    } else {
      r.frags_loaded++;
      r.frag_sns.push(d.frag.sn);
    }
  });
  hls.on(Hls.Events.BUFFER_EOS, () => {
    r.eos = true;
    ev('BUFFER_EOS');
  });
  hls.on(Hls.Events.ERROR, (_, d) => {
    const e = { type: d.type, details: d.details, fatal: !!d.fatal, ct: +video.currentTime.toFixed(3), at_ms: now() };
    if (d.error && d.error.message) e.message = String(d.error.message).slice(0, 300);
    if (d.reason) e.reason = String(d.reason).slice(0, 300);
    if (r.errors.length < 50) r.errors.push(e);
    if (d.fatal) {
      r.fatal = e;
      finish('fatal', d.type + '/' + d.details);
    }
  });

  video.muted = true;
  video.autoplay = true;
  video.defaultPlaybackRate = rate;
  video.playbackRate = rate;
  r.rate_set = video.playbackRate;
  hls.attachMedia(video);
  hls.loadSource(src);
})();
