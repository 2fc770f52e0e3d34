use super::*;
use crate::plan::{Planner, Sizing};

/// 24 s of 1280x720 at 24000/1001 with one 5.1 audio stream, as ffprobe reports
/// a Matroska file (millisecond timestamps: the video starts at 5 ms).
fn probe() -> Probe {
    let json = r#"{"streams":[
        {"index":0,"codec_type":"video","r_frame_rate":"24000/1001","avg_frame_rate":"24000/1001","start_time":"0.005000","disposition":{"attached_pic":0}},
        {"index":1,"codec_type":"audio","r_frame_rate":"0/0","avg_frame_rate":"0/0","channels":6,"start_time":"0.000000","disposition":{"attached_pic":0}}],
        "format":{"start_time":"0.000000","duration":"24.000000"}}"#;
    Probe::from_json(json).unwrap().assume_first_pictures()
}

fn jellyfin(extra_input: &[&str], seg: &str) -> Vec<String> {
    let mut a: Vec<String> = extra_input.iter().map(|s| s.to_string()).collect();
    let rest = format!(
        "-analyzeduration 200M -probesize 1G -i file:/media/in.mkv -map_metadata -1 -map_chapters -1 -threads 0 \
         -map 0:0 -map 0:1 -map -0:s -codec:v:0 libx264 -preset veryfast -crf 23 -maxrate 2000000 -bufsize 4000000 \
         -profile:v:0 high -level 41 -x264opts:0 subme=0:me_range=16 -force_key_frames:0 expr:gte(t,n_forced*{seg}) \
         -sc_threshold:v:0 0 -vf format=yuv420p -codec:a:0 aac -ac 2 -ab 128000 -af volume=2 -copyts \
         -avoid_negative_ts disabled -max_muxing_queue_size 2048 -f hls -max_delay 5000000 -hls_time {seg} \
         -hls_segment_type mpegts -start_number 0 -hls_segment_filename /tmp/t/x%d.ts -hls_playlist_type vod \
         -hls_list_size 0 -y /tmp/t/x.m3u8"
    );
    a.extend(rest.split(' ').map(str::to_owned));
    a
}

fn plan_of(args: &[String], probe: &Probe) -> Result<Split, NotSplit> {
    split(&CommandLine::parse(args).unwrap(), probe)
}

fn pos(args: &[String], flag: &str) -> Option<String> {
    args.windows(2).find(|w| w[0] == flag).map(|w| w[1].clone())
}

#[test]
fn jellyfin_hls_splits_into_video_chunks_and_a_copying_finisher() {
    let s = plan_of(&jellyfin(&[], "3"), &probe()).unwrap();
    assert_eq!(s.plan.grid.period, 3.0);
    assert!((s.plan.start - 0.005).abs() < 1e-9, "{}", s.plan.start);
    assert_eq!(s.plan.end, 24.0);

    let f = &s.finisher;
    let joined = f.join(" ");
    assert!(joined.contains("-i file:/media/in.mkv -f mpegts -thread_queue_size 1024 -i /dev/fd/3"), "{joined}");
    assert!(joined.contains("-map 1:0 -map 0:1 -map -0:s"), "{joined}");
    assert!(joined.contains("-codec:v:0 copy"), "{joined}");
    for gone in ["-vf", "-x264opts:0", "-force_key_frames:0", "-profile:v:0", "-sc_threshold:v:0"] {
        assert!(!f.iter().any(|a| a == gone), "{gone} left in the finisher: {joined}");
    }
    for kept in ["-codec:a:0", "-af", "-hls_time", "-hls_segment_filename", "-copyts", "-start_number", "-preset"] {
        assert!(f.iter().any(|a| a == kept), "{kept} missing from the finisher: {joined}");
    }
    assert_eq!(f.last().unwrap(), "/tmp/t/x.m3u8");

    // A middle chunk: cut half a frame before the first frame of segment 1, trim
    // before the first frame of segment 3, keyframes re-anchored.
    let r = &s.plan.recipe;
    let chunk = Chunk { index: 1, start: 3.005, end: 9.005, first_segment: 1 };
    let a = r.args(&chunk, false, false);
    let joined = a.join(" ");
    let fd = 1001.0 / 24000.0;
    let ss: f64 = pos(&a, "-ss").unwrap().parse().unwrap();
    // First frame at or after 3.005 is 0.005 + 72·fd = 3.008.
    assert!((ss - (0.005 + 72.0 * fd - fd / 2.0)).abs() < 1e-6, "{joined}");
    let vf = pos(&a, "-vf").unwrap();
    let end: f64 = vf.strip_prefix("trim=end=").unwrap().split(',').next().unwrap().parse().unwrap();
    assert!((end - (0.005 + 216.0 * fd - fd / 2.0)).abs() < 1e-6, "{vf}");
    assert!(vf.ends_with(",format=yuv420p"), "{vf}");
    let kf = pos(&a, "-force_key_frames:v:0").unwrap();
    assert!(kf.starts_with("expr:gte(t,n_forced*3-0.00"), "{kf}");
    for want in ["-map 0:0", "-codec:v:0 libx264", "-x264opts:v:0 subme=0:me_range=16", "-f mpegts", "pipe:1"] {
        assert!(joined.contains(want), "{want} missing: {joined}");
    }
    for gone in ["-hls_time", "-codec:a:0", "-af", "-start_number", "-max_delay", "-map_metadata"] {
        assert!(!a.iter().any(|x| x == gone), "{gone} in a chunk: {joined}");
    }
    // The last chunk reads to the end; the first uses the job's own seek (none).
    assert!(!r.args(&chunk, false, true).iter().any(|x| x.starts_with("trim")));
    let first = r.args(&Chunk { index: 0, start: 0.005, end: 3.005, first_segment: 0 }, true, false);
    assert!(pos(&first, "-ss").is_none());
    assert_eq!(pos(&first, "-force_key_frames:v:0").unwrap(), "expr:gte(t,n_forced*3)");
}

#[test]
fn chunk_cuts_fall_on_the_direct_runs_keyframes() {
    // The direct run's keyframe n is frame ceil(n·P/fd) from the first frame; a
    // chunk's cut must pick that frame, and its keyframe expression must pick
    // the direct run's later keyframes too.
    let s = plan_of(&jellyfin(&[], "3"), &probe()).unwrap();
    let r = &s.plan.recipe;
    let fd = 1001.0 / 24000.0;
    let p = 3.0;
    let mut planner = Planner::new(s.plan.grid, s.plan.start, s.plan.end, 0, Sizing::default());
    while let Some(c) = planner.next(1.0, 0.0) {
        if c.index == 0 {
            continue;
        }
        let a = r.args(&c, false, false);
        let ss: f64 = pos(&a, "-ss").unwrap().parse().unwrap();
        let first = ((ss - 0.005) / fd).ceil() as i64;
        let n = ((c.start - 0.005) / p).round() as i64;
        assert_eq!(first, ((n as f64) * p / fd).ceil() as i64, "chunk {c:?}");
        // Keyframes the chunk's expression forces, by frame index.
        let kf = pos(&a, "-force_key_frames:v:0").unwrap();
        let late: f64 = kf.rsplit_once('-').map_or(0.0, |(_, l)| l.trim_end_matches(')').parse().unwrap());
        let mut forced = 0;
        for j in 0..(((c.end - c.start) / fd) as i64) {
            let t = j as f64 * fd;
            if t >= forced as f64 * p - late - 1e-9 {
                let frame = first + j;
                let direct = ((n + forced) as f64 * p / fd).ceil() as i64;
                assert_eq!(frame, direct, "keyframe {forced} of chunk {c:?}");
                forced += 1;
            }
        }
    }
}

#[test]
fn seeks_start_where_ffmpeg_does() {
    // Jellyfin's seek restart: -ss 00:00:09.000 -start_number 3.
    let mut args = jellyfin(&["-ss", "00:00:09.000"], "3");
    let at = args.iter().position(|a| a == "-start_number").unwrap();
    args[at + 1] = "3".into();
    let s = plan_of(&args, &probe()).unwrap();
    let fd = 1001.0 / 24000.0;
    // Accurate seek: the first frame at or after 9 s.
    assert!((s.plan.start - (0.005 + 216.0 * fd)).abs() < 1e-9, "{}", s.plan.start);
    assert_eq!(s.plan.start_number, 3);
    let first = s.plan.recipe.args(&Chunk { index: 0, start: s.plan.start, end: 12.0, first_segment: 3 }, true, false);
    assert_eq!(pos(&first, "-ss").unwrap(), "00:00:09.000");
    assert!(s.finisher.join(" ").contains("-ss 00:00:09.000 -analyzeduration"));

    // Without accurate seek ffmpeg starts at the keyframe before; the shim asks
    // ffprobe where that is.
    let mut plain = jellyfin(&["-noaccurate_seek", "-ss", "9"], "3");
    plain.retain(|a| a != "-copyts");
    // Without -copyts the frames before -ss get negative times, which the
    // timeline model does not follow.
    let mut p = probe();
    p.parse_keyframe("8.005000\n");
    assert!(matches!(plan_of(&plain, &p), Err(NotSplit::Timeline(_))));
    let args = jellyfin(&["-noaccurate_seek", "-ss", "9"], "3");
    assert!(matches!(plan_of(&args, &probe()), Err(NotSplit::Streams(_))));
    let mut p = probe();
    p.parse_keyframe("8.005000\n");
    let s = plan_of(&args, &p).unwrap();
    assert_eq!(s.plan.start, 8.005);
    let first = s.plan.recipe.args(&Chunk { index: 0, start: 8.005, end: 11.005, first_segment: 0 }, true, false);
    assert!(first.join(" ").contains("-noaccurate_seek -ss 9 -i"), "{first:?}");
}

#[test]
fn plain_command_lines_split_with_implicit_streams() {
    let args: Vec<String> = "-i in.mkv -c:v libx264 -crf 20 -c:a aac out.mp4".split(' ').map(str::to_owned).collect();
    let s = plan_of(&args, &probe()).unwrap();
    assert_eq!(s.plan.grid.period, 2.0);
    let f = s.finisher.join(" ");
    assert_eq!(
        f,
        "-i in.mkv -f mpegts -thread_queue_size 1024 -i /dev/fd/3 -c:v copy -crf 20 -c:a aac \
         -field_order:v:0 progressive -video_track_timescale 24000 -map 1:0 -map 0:1 out.mp4"
    );
    let a = s.plan.recipe.args(&Chunk { index: 1, start: 2.005, end: 4.005, first_segment: 1 }, false, false);
    let a = a.join(" ");
    assert!(a.contains("-map 0:0 -codec:v:0 libx264 -crf 20 -vf trim=end="), "{a}");
}

#[test]
fn what_is_not_split_says_why() {
    let p = probe();
    let no = |s: &str| {
        let a: Vec<String> = s.split(' ').map(str::to_owned).collect();
        plan_of(&a, &p).expect_err(s)
    };
    assert!(matches!(no("-i in.mkv -c:v copy -c:a aac out.mp4"), NotSplit::Streams(_)));
    assert!(matches!(no("-i in.mkv -c:v libx264 -t 10 out.mp4"), NotSplit::Option(o) if o == "t"));
    assert!(matches!(no("-i in.mkv -i b.srt -c:v libx264 out.mp4"), NotSplit::Shape(_)));
    assert!(matches!(no("-i in.mkv -c:v libx264 -f hls -hls_time 3 o.m3u8"), NotSplit::Shape(_)));
    assert!(matches!(
        no("-i in.mkv -filter_complex [0:0]scale=320:-2[v] -map [v] -c:v libx264 out.mp4"),
        NotSplit::Option(_)
    ));
    let mut short = p.clone();
    short.duration = Some(3.0);
    let a: Vec<String> = "-i in.mkv -c:v libx264 out.mp4".split(' ').map(str::to_owned).collect();
    assert!(matches!(plan_of(&a, &short), Err(NotSplit::TooShort(_))));
    let mut unknown = p;
    unknown.duration = None;
    assert_eq!(plan_of(&a, &unknown), Err(NotSplit::NoDuration));
}

#[test]
fn the_plan_travels_as_json() {
    let s = plan_of(&jellyfin(&[], "3"), &probe()).unwrap();
    let text = serde_json::to_string(&s.plan).unwrap();
    assert_eq!(serde_json::from_str::<SplitPlan>(&text).unwrap(), s.plan);
}

#[test]
fn jellyfins_audio_goes_to_a_node_and_the_finisher_only_copies() {
    let s = plan_of(&jellyfin(&[], "3"), &probe()).unwrap();
    let audio = s.plan.audio.as_ref().expect("-copyts with aac: offloadable");
    assert_eq!(audio.map, "0:1");
    // Generic options applied to the audio encoder in the direct run too.
    assert_eq!(
        audio.opts.join(" "),
        "-threads 0 -preset veryfast -crf 23 -maxrate 2000000 -bufsize 4000000 -level 41 \
         -codec:a:0 aac -ac 2 -ab 128000 -af volume=2"
    );
    let a = s.plan.recipe.audio_args(audio).join(" ");
    assert!(a.contains("-copyts -analyzeduration 200M -probesize 1G -i file:/media/in.mkv -map 0:1"), "{a}");
    assert!(
        a.ends_with(
            "-vn -sn -dn -avoid_negative_ts disabled -f mpegts -muxdelay 0 -muxpreload 0 -flush_packets 1 pipe:1"
        ),
        "{a}"
    );
    // A seek restart without accurate_seek keeps the video in use, so that
    // the audio starts where the direct run's does.
    let mut p = probe();
    p.parse_keyframe("8.005000\n");
    let restart = plan_of(&jellyfin(&["-noaccurate_seek", "-ss", "9"], "3"), &p).unwrap();
    let a = restart.plan.recipe.audio_args(restart.plan.audio.as_ref().unwrap()).join(" ");
    assert!(a.ends_with("-flush_packets 1 pipe:1 -map 0:0 -c copy -f null -"), "{a}");
    // Audio only the finisher can encode would start elsewhere: not split.
    let opus: Vec<String> = jellyfin(&["-noaccurate_seek", "-ss", "9"], "3")
        .into_iter()
        .map(|a| if a == "aac" { "libopus".to_owned() } else { a })
        .collect();
    assert!(matches!(plan_of(&opus, &p), Err(NotSplit::Timeline(_))));

    let f = s.finisher_audio_copy.as_ref().unwrap();
    let joined = f.join(" ");
    assert!(joined.contains("-i /dev/fd/3 -f mpegts -thread_queue_size 1024 -i /dev/fd/4"), "{joined}");
    assert!(joined.contains("-map 1:0 -map 2:0 -map -0:s"), "{joined}");
    assert!(joined.contains("-codec:a:0 copy"), "{joined}");
    for gone in ["-ac", "-ab", "-af", "aac", "-bsf:a:0"] {
        assert!(!f.iter().any(|a| a == gone), "{gone} left in the finisher: {joined}");
    }
    for kept in ["-copyts", "-hls_time", "-map_metadata", "-max_muxing_queue_size", "-threads"] {
        assert!(f.iter().any(|a| a == kept), "{kept} missing from the finisher: {joined}");
    }
    // The local-audio finisher is still there for a lone node.
    assert!(s.finisher.iter().any(|a| a == "-af"));
}

#[test]
fn fmp4_strips_adts_and_an_unsafe_audio_stays_local() {
    let fmp4: Vec<String> =
        jellyfin(&[], "3").into_iter().map(|a| if a == "mpegts" { "fmp4".into() } else { a }).collect();
    let s = plan_of(&fmp4, &probe()).unwrap();
    assert!(s.finisher_audio_copy.unwrap().join(" ").contains("-bsf:a:0 aac_adtstoasc"));

    let swap = |from: &str, to: &[&str]| -> Vec<String> {
        let mut out = Vec::new();
        for a in jellyfin(&[], "3") {
            if a == from { out.extend(to.iter().map(|s| s.to_string())) } else { out.push(a) }
        }
        out
    };
    // Without -copyts the finisher would shift the node's stream by its priming.
    assert!(plan_of(&swap("-copyts", &[]), &probe()).unwrap().plan.audio.is_none());
    assert!(plan_of(&swap("-copyts", &["-copyts", "-start_at_zero"]), &probe()).unwrap().plan.audio.is_none());
    // Opus and FLAC do not round-trip through MPEG-TS; a copy costs nothing locally.
    for codec in ["libopus", "flac", "copy"] {
        let s = plan_of(&swap("aac", &[codec]), &probe()).unwrap();
        assert!(s.plan.audio.is_none() && s.finisher_audio_copy.is_none(), "{codec}");
    }
    // An audio bitstream filter would have to chain with the ADTS one.
    assert!(plan_of(&swap("-af", &["-bsf:a", "noise", "-af"]), &probe()).unwrap().plan.audio.is_none());
}

#[test]
fn a_job_whose_direct_run_repeats_the_first_frame_is_not_split() {
    // Video starting 21 ms after the file (AAC priming in Matroska), plain mp4
    // output without -copyts: ffmpeg repeats the first frame, a copy cannot.
    let json = r#"{"streams":[
        {"index":0,"codec_type":"video","r_frame_rate":"24000/1001","avg_frame_rate":"24000/1001","start_time":"0.021000"},
        {"index":1,"codec_type":"audio","channels":2,"start_time":"0.000000"}],
        "format":{"start_time":"0.000000","duration":"24.000000"}}"#;
    let late = Probe::from_json(json).unwrap().assume_first_pictures();
    let mp4 = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        a.extend("-i /media/in.mkv -c:v libx264 -c:a aac /tmp/out.mp4".split(' ').map(str::to_owned));
        a
    };
    assert!(matches!(plan_of(&mp4(&[]), &late), Err(NotSplit::Shape(s)) if s.contains("repeats the first frame")));
    // Variable-rate muxers, -copyts and an explicit rate mode do not repeat it.
    let mkv: Vec<String> = mp4(&[]).into_iter().map(|a| a.replace("out.mp4", "out.mkv")).collect();
    assert!(plan_of(&mkv, &late).is_ok());
    assert!(plan_of(&mp4(&["-copyts"]), &late).is_ok());
    let mut vfr = mp4(&[]);
    vfr.splice(vfr.len() - 1..vfr.len() - 1, ["-fps_mode".to_owned(), "passthrough".to_owned()]);
    assert!(plan_of(&vfr, &late).is_ok());
    // A video that starts with the file is split as before.
    assert!(plan_of(&mp4(&[]), &probe()).is_ok());
}

#[test]
fn the_codec_tag_is_the_finishers() {
    // Jellyfin's HEVC in fMP4 asks for hvc1; only the finisher's mp4 muxer can write it.
    let args: Vec<String> = jellyfin(&[], "3")
        .into_iter()
        .flat_map(|a| if a == "libx264" { vec!["libx265".into(), "-tag:v:0".into(), "hvc1".into()] } else { vec![a] })
        .collect();
    let s = plan_of(&args, &probe()).unwrap();
    assert!(s.finisher.windows(2).any(|w| w == ["-tag:v:0", "hvc1"]), "{:?}", s.finisher);
    let chunk = Chunk { index: 0, start: 0.005, end: 3.005, first_segment: 0 };
    assert!(!s.plan.recipe.args(&chunk, true, false).iter().any(|a| a.starts_with("-tag")));
}

#[test]
fn a_chunk_must_hold_the_frames_between_its_cuts() {
    // Frames are counted from the direct run's first frame at 5 ms, so a chunk
    // holds its length in frames, give or take the one on its edge, and all
    // chunks add up.
    let s = plan_of(&jellyfin(&[], "3"), &probe()).unwrap();
    let r = &s.plan.recipe;
    let fd = 1001.0 / 24000.0;
    let mut planner = Planner::new(s.plan.grid, s.plan.start, s.plan.end, 0, Sizing::default());
    let mut total = 0;
    let mut last_end = s.plan.start;
    while let Some(c) = planner.next(1.0, 0.0) {
        let last = c.end >= s.plan.end - 1e-6;
        match r.frames(&c, c.index == 0, last) {
            Some(n) => {
                let len = (c.end - c.start) / fd;
                assert!((n as f64 - len).abs() <= 1.0, "{n} frames in {c:?}");
                total += n;
                last_end = c.end;
            }
            None => assert!(last, "only the chunk that reads to the end is uncounted: {c:?}"),
        }
    }
    // Up to the last cut: every frame counted once.
    assert_eq!(total, ((last_end - 0.005) / fd).ceil() as u64);
    // A chain that may drop or add frames leaves the count open; one that
    // makes a frame of each field is not split.
    let chain = |f: &str| -> Vec<String> {
        jellyfin(&[], "3").iter().map(|a| a.replace("format=yuv420p", &format!("{f},format=yuv420p"))).collect()
    };
    assert!(matches!(plan_of(&chain("yadif=1"), &probe()), Err(NotSplit::RateChange(_))));
    let s = plan_of(&chain("yadif=0"), &probe()).unwrap();
    let c = Chunk { index: 1, start: 3.005, end: 6.005, first_segment: 1 };
    assert_eq!(s.plan.recipe.frames(&c, false, false), None);
}

#[test]
fn a_seek_keeps_the_frame_matroska_stores_at_it() {
    // Frame 1870 of 24000/1001 from 5 ms is at 77.99958 s: Matroska stores it as
    // 78.000, so `-ss 78` keeps it, while a container with exact timestamps
    // drops it. The grid starts at the frame the direct run starts at.
    let json = |format: &str| {
        format!(
            r#"{{"streams":[{{"index":0,"codec_type":"video","r_frame_rate":"24000/1001","avg_frame_rate":"24000/1001","start_time":"0.005000"}},
                {{"index":1,"codec_type":"audio","channels":6,"start_time":"0.000000"}}],
                "format":{{"start_time":"0.000000","duration":"180.000000","format_name":"{format}"}}}}"#
        )
    };
    let fd = 1001.0 / 24000.0;
    let args = jellyfin(&["-ss", "00:01:18.000"], "3");
    let mkv = plan_of(&args, &Probe::from_json(&json("matroska,webm")).unwrap().assume_first_pictures()).unwrap();
    assert!((mkv.plan.start - (0.005 + 1870.0 * fd)).abs() < 1e-9, "{}", mkv.plan.start);
    let mp4 =
        plan_of(&args, &Probe::from_json(&json("mov,mp4,m4a,3gp,3g2,mj2")).unwrap().assume_first_pictures()).unwrap();
    assert!((mp4.plan.start - (0.005 + 1871.0 * fd)).abs() < 1e-9, "{}", mp4.plan.start);
}

/// The first seconds of a Live TV channel as ffprobe reports them from a pipe:
/// MPEG-TS, H.264 at 25 fps and AAC, no duration.
fn live_probe() -> Probe {
    let json = r#"{"streams":[
        {"index":0,"codec_type":"video","r_frame_rate":"25/1","avg_frame_rate":"25/1","start_time":"1.400000","disposition":{"attached_pic":0}},
        {"index":1,"codec_type":"audio","r_frame_rate":"0/0","avg_frame_rate":"0/0","channels":2,"start_time":"1.390000","disposition":{"attached_pic":0}}],
        "format":{"start_time":"1.390000","format_name":"mpegts"}}"#;
    Probe::from_json(json).unwrap().assume_first_pictures()
}

/// Jellyfin's Live TV HLS: an http input with the tuner's options, `-re`, an
/// event playlist.
fn jellyfin_live() -> Vec<String> {
    let mut a = jellyfin(&[], "3");
    let i = a.iter().position(|x| x == "-i").unwrap();
    a[i + 1] = "http://localhost:8096/LiveTv/LiveStreamFiles/abc/stream.ts".into();
    let tuner = ["-user_agent", "Jellyfin-LiveTV", "-fflags", "+igndts", "-re", "-reconnect_streamed", "1"];
    a.splice(i..i, tuner.map(str::to_owned));
    let t = a.iter().position(|x| x == "vod").unwrap();
    a[t] = "event".into();
    a
}

#[test]
fn a_live_stream_splits_into_pieces_and_the_finisher_reads_its_own_copy() {
    let cl = CommandLine::parse(&jellyfin_live()).unwrap();
    let s = split_live(&cl, &live_probe(), 1.4).unwrap();
    // A whole number of pieces per segment: 3 s / round(3 / 1.4) = 1.5 s.
    assert_eq!(s.plan.live, Some(LivePlan { piece: 1.5, stream: 0 }));
    assert_eq!(s.plan.grid.period, 3.0);
    assert!(s.plan.audio.is_none() && s.finisher_audio_copy.is_none());

    // The finisher: the stream from descriptor 5 with its demuxer options only
    // (the tuner's http options would be refused on a pipe), the joined video
    // as input 1, the audio encoded from input 0.
    let f = s.finisher.join(" ");
    assert!(
        f.contains("-fflags +igndts -f mpegts -thread_queue_size 4096 -i /dev/fd/5 -analyzeduration 1000000 -f mpegts -thread_queue_size 1024 -i /dev/fd/3"),
        "{f}"
    );
    for gone in ["-user_agent", "-re", "-reconnect_streamed", "-vf"] {
        assert!(!s.finisher.iter().any(|a| a == gone), "{gone} in the finisher: {f}");
    }
    assert!(f.contains("-map 1:0 -map 0:1") && f.contains("-codec:v:0 copy") && f.contains("-codec:a:0 aac"), "{f}");

    // A piece that starts 1.5 s into a segment: trimmed on 90 kHz source
    // timestamps, its next keyframe on the segment grid, read unpaced.
    let origin = 126_000;
    let span = LiveSpan { start: origin + 9 * 90_000 / 2, end: Some(origin + 6 * 90_000), origin };
    let a = s.plan.recipe.live_args(&span, "ffcluster-live-3.ts");
    let j = a.join(" ");
    assert_eq!(pos(&a, "-i").as_deref(), Some("ffcluster-live-3.ts"), "{j}");
    assert_eq!(pos(&a, "-vf").as_deref(), Some("trim=start_pts=531000:end_pts=666000,format=yuv420p"), "{j}");
    assert_eq!(pos(&a, "-force_key_frames:v:0").as_deref(), Some("expr:gte(t,n_forced*3-1.500000)"), "{j}");
    for gone in ["-re", "-user_agent", "-reconnect_streamed", "-ss"] {
        assert!(!a.iter().any(|x| x == gone), "{gone} in the piece's command line: {j}");
    }
    assert!(
        j.contains("-copyts")
            && j.contains("-fflags +igndts")
            && j.ends_with("-f mpegts -muxdelay 0 -muxpreload 0 -flush_packets 1 pipe:1"),
        "{j}"
    );
    // The last piece reads to the end of what it holds.
    let last = s.plan.recipe.live_args(&LiveSpan { end: None, ..span }, "p.ts");
    assert_eq!(pos(&last, "-vf").as_deref(), Some("trim=start_pts=531000,format=yuv420p"));
    // On a segment line: the plain expression.
    let on_grid = s.plan.recipe.live_args(&LiveSpan { start: origin + 3 * 90_000, ..span }, "p.ts");
    assert_eq!(pos(&on_grid, "-force_key_frames:v:0").as_deref(), Some("expr:gte(t,n_forced*3)"));
}

#[test]
fn live_streams_that_cannot_be_split_say_why() {
    let probe = live_probe();
    let without = |flag: &str| {
        let a: Vec<String> = jellyfin_live().into_iter().filter(|x| x != flag).collect();
        split_live(&CommandLine::parse(&a).unwrap(), &probe, 1.0).unwrap_err().to_string()
    };
    assert!(without("-copyts").contains("-copyts"), "{}", without("-copyts"));
    let mut mkv = live_probe();
    mkv.format_name = Some("matroska,webm".into());
    let err = split_live(&CommandLine::parse(&jellyfin_live()).unwrap(), &mkv, 1.0).unwrap_err();
    assert!(err.to_string().contains("MPEG-TS"), "{err}");
    // A file is not live; a stream is not split as a file.
    assert!(split_live(&CommandLine::parse(&jellyfin(&[], "3")).unwrap(), &probe, 1.0).is_err());
    assert!(split(&CommandLine::parse(&jellyfin_live()).unwrap(), &probe).is_err());
}

#[test]
fn the_probe_reads_the_first_picture_and_the_packet_times() {
    // A recording cut mid-GOP: three pictures before the first I-frame cannot
    // be decoded, and its two leading B-frames are dropped.
    let json = r#"{"packets_and_frames":[
        {"type":"packet","stream_index":0,"pts_time":"10003.200000"},
        {"type":"packet","stream_index":1,"pts_time":"10003.060933"},
        {"type":"packet","stream_index":0,"pts_time":"10003.120000"},
        {"type":"packet","stream_index":0,"pts_time":"10003.160000"},
        {"type":"packet","stream_index":0,"pts_time":"10003.320000"},
        {"type":"packet","stream_index":0,"pts_time":"10003.240000"},
        {"type":"packet","stream_index":0,"pts_time":"10003.280000"},
        {"type":"frame","stream_index":1,"best_effort_timestamp_time":"10003.060933"},
        {"type":"frame","stream_index":0,"best_effort_timestamp_time":"10003.320000","interlaced_frame":1,"top_field_first":1}],
      "streams":[
        {"index":0,"codec_type":"video","r_frame_rate":"25/1","avg_frame_rate":"25/1","start_time":"10003.200000",
         "tags":{"language":"fra","title":"Le film"}},
        {"index":1,"codec_type":"audio","channels":2,"start_time":"10003.060933"}],
      "format":{"start_time":"10003.060933","duration":"8.000000","format_name":"mpegts"}}"#;
    let p = Probe::from_json(json).unwrap();
    let v = &p.streams[0];
    let first = v.first_picture.unwrap();
    assert!((first.time - 0.259067).abs() < 1e-6, "{first:?}");
    assert!(first.interlaced && first.top_field_first);
    assert_eq!(v.frame_times.len(), 1);
    assert!((v.read_up_to.unwrap() - 0.259067).abs() < 1e-6);
    assert!(p.pictures_found());
    // Matroska output without -copyts: the video is placed on its frame tick
    // (260 ms late, 6.48 frames: at 6 frames) with its field order and tags.
    let args: Vec<String> = "-i in.ts -c:v libx264 -c:a aac out.mkv".split(' ').map(str::to_owned).collect();
    let s = plan_of(&args, &p).unwrap();
    let f = s.finisher.join(" ");
    assert!(f.contains("-itsoffset 0.240000 -f mpegts"), "{f}");
    assert!(f.contains("-field_order:v:0 tb"), "{f}");
    assert!(f.contains("-metadata:s:v:0 language=fra -metadata:s:v:0 title=Le film"), "{f}");
    assert!((s.plan.grid.origin - 0.259067).abs() < 1e-6);
    // Jellyfin drops every tag: so does the finisher.
    let args: Vec<String> =
        "-i in.ts -map_metadata -1 -c:v libx264 -c:a aac out.mkv".split(' ').map(str::to_owned).collect();
    assert!(!plan_of(&args, &p).unwrap().finisher.iter().any(|a| a.starts_with("-metadata")));
    // MPEG-TS has no keyframe index: a chunk seeks 4 s early and trims to
    // its first frame on source timestamps.
    let chunk = Chunk { index: 1, start: 2.259067, end: 4.259067, first_segment: 1 };
    let a = s.plan.recipe.args(&chunk, false, false).join(" ");
    assert!(a.contains("-ss 0.000000 -i in.ts"), "{a}");
    assert!(a.contains("-vf trim=start=10005.300000:end=10007.300000"), "{a}");
    // ... and its -noaccurate_seek, which lands near a time, is not modelled.
    let args: Vec<String> =
        "-noaccurate_seek -ss 3 -i in.ts -c:v libx264 -c:a aac -copyts out.mkv".split(' ').map(str::to_owned).collect();
    assert!(matches!(plan_of(&args, &p), Err(NotSplit::Timeline(_))));
}

#[test]
fn an_mp4_times_its_video_track_as_the_direct_encoder_does() {
    assert_eq!(track_timescale("25/1"), Some(12800));
    assert_eq!(track_timescale("24000/1001"), Some(24000));
    assert_eq!(track_timescale("50/2"), Some(12800));
    let args: Vec<String> = "-i in.mkv -c:v libx264 -c:a aac -copyts out.mp4".split(' ').map(str::to_owned).collect();
    let s = plan_of(&args, &probe()).unwrap();
    assert!(s.finisher.join(" ").contains("-video_track_timescale 24000"), "{:?}", s.finisher);
}

#[test]
fn codecs_that_mpegts_chunks_cannot_carry_are_not_split() {
    for (codec, out) in [("libsvtav1", "out.mkv"), ("libvpx-vp9", "out.webm"), ("prores_ks", "out.mov")] {
        let args: Vec<String> =
            format!("-i in.mkv -c:v {codec} -c:a copy {out}").split(' ').map(str::to_owned).collect();
        assert!(matches!(plan_of(&args, &probe()), Err(NotSplit::ChunkCodec(_))), "{codec}");
    }
    let args: Vec<String> =
        "-i in.mkv -vf scale=480:-2 -r 30 -c:v libx264 out.mkv".split(' ').map(str::to_owned).collect();
    assert!(matches!(plan_of(&args, &probe()), Err(NotSplit::RateChange(_))));
}

#[test]
fn copied_packets_last_as_long_as_the_direct_encoders() {
    // One frame in 90 kHz ticks, rounded to nearest as av_rescale_q does (the
    // MPEG-TS demuxer rounds down: 3753 at 24000/1001, 1501 at 60000/1001).
    for (rate, ticks) in
        [("24000/1001", 3754), ("60000/1001", 1502), ("30000/1001", 3003), ("25/1", 3600), ("24", 3750)]
    {
        assert_eq!(frame_ticks("libx264", rate), Some(ticks), "{rate}");
    }
    // Matroska's millisecond clock gives 59.94 fps video this base rate.
    assert_eq!(frame_ticks("libx264", "19001/317"), Some(1501));
    // MPEG-2 encoders snap other rates to a standard one; MPEG-4 reduces big terms.
    assert_eq!(frame_ticks("mpeg2video", "19001/317"), None);
    assert_eq!(frame_ticks("mpeg2video", "50/2"), Some(3600));
    assert_eq!(frame_ticks("mpeg4", "2997003/125000"), None);
    assert_eq!(frame_ticks("libx264", "0/0"), None);

    let s = plan_of(&jellyfin(&[], "3"), &probe()).unwrap();
    assert_eq!(
        pos(&s.finisher, "-bsf:v:0").as_deref(),
        Some("setts=pts=PTS:dts=DTS:duration=3754"),
        "{:?}",
        s.finisher
    );
    let fin = s.finisher_audio_copy.unwrap();
    assert_eq!(pos(&fin, "-bsf:v:0").as_deref(), Some("setts=pts=PTS:dts=DTS:duration=3754"), "{fin:?}");
    // Never on the chunks: they are MPEG-TS, which keeps no durations.
    let chunk = Chunk { index: 1, start: 3.005, end: 9.005, first_segment: 1 };
    assert!(!s.plan.recipe.args(&chunk, false, false).iter().any(|a| a.contains("setts")));

    // A bitstream filter of the job's own on the finisher's video is left alone.
    let mut args = jellyfin(&[], "3");
    let at = args.iter().position(|a| a == "-y").unwrap();
    args.splice(at..at, ["-bsf".to_owned(), "dump_extra".to_owned()]);
    let s = plan_of(&args, &probe()).unwrap();
    assert_eq!(pos(&s.finisher, "-bsf").as_deref(), Some("dump_extra"), "{:?}", s.finisher);
    assert!(!s.finisher.iter().any(|a| a.contains("setts")), "{:?}", s.finisher);

    // fMP4 segments and mp4 files time the video in 1/24000 here, where the
    // demuxer's 3753 ticks round to the encoder's one frame too.
    let fmp4: Vec<String> =
        jellyfin(&[], "3").into_iter().map(|a| if a == "mpegts" { "fmp4".into() } else { a }).collect();
    let s = plan_of(&fmp4, &probe()).unwrap();
    assert!(!s.finisher.iter().any(|a| a.contains("setts")), "{:?}", s.finisher);
    let mp4: Vec<String> = "-i in.mkv -c:v libx264 -c:a aac -copyts out.mp4".split(' ').map(str::to_owned).collect();
    assert!(!plan_of(&mp4, &probe()).unwrap().finisher.iter().any(|a| a.contains("setts")));
}

#[test]
fn the_video_gets_the_encoder_tag_the_direct_run_writes() {
    let mut p = probe();
    p.lavc = Some("Lavc59.37.100".into());
    let args = |extra: &str| -> Vec<String> {
        format!("-i in.mkv {extra} -c:v libx264 -c:a aac -copyts out.mkv")
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let fin = |a: &[String], p: &Probe| plan_of(a, p).unwrap().finisher.join(" ");
    assert!(fin(&args(""), &p).contains("-metadata:s:v:0 encoder=Lavc59.37.100 libx264"));
    assert!(fin(&args("-map_metadata -1"), &p).contains("-metadata:s:v:0 encoder=Lavc59.37.100 libx264"));
    assert!(fin(&args("-fflags +bitexact"), &p).contains("-metadata:s:v:0 encoder=Lavc libx264"));
    // The input stream's encoder tag is dropped for an encoded stream.
    p.streams[0].tags = vec![("ENCODER".into(), "Lavc59.37.100 libvpx-vp9".into())];
    let f = fin(&args(""), &p);
    assert!(f.contains("-metadata:s:v:0 encoder=Lavc59.37.100 libx264") && !f.contains("libvpx"), "{f}");
}

#[test]
fn a_job_taken_over_from_a_lost_cluster_runs_what_no_attempt_finished_then_the_rest() {
    use super::takeover::{Announced, FIRST_ATTEMPT, remaining};
    use crate::protocol::AUDIO_CHUNK;
    let plan = plan_of(&jellyfin(&[], "3"), &probe()).unwrap().plan;
    assert!(plan.audio.is_some(), "a node may encode this job's audio");
    let chunk = |index: usize, start: f64, end: f64| Chunk { index, start, end, first_segment: 0 };
    let mut announced = std::collections::BTreeMap::new();
    announced.insert(0, Announced { start: 0.005, end: 3.005, last: false });
    announced.insert(1, Announced { start: 3.005, end: 6.005, last: false });
    announced.insert(2, Announced { start: 6.005, end: 12.005, last: false });
    // Chunks 0 and 2 were had; 1 was running, the rest never started.
    let work = remaining(&plan, &announced, |c| c == 0 || c == 2, false);
    let chunks: Vec<(u32, bool)> = work.iter().map(|w| (w.chunk, w.last)).collect();
    assert_eq!(chunks, [(1, false), (3, true), (AUDIO_CHUNK, false)]);
    assert_eq!(work[0].args, plan.recipe.args(&chunk(1, 3.005, 6.005), false, false));
    assert_eq!(work[1].args, plan.recipe.args(&chunk(3, 12.005, 24.0), false, true));
    assert_eq!(work[2].args, plan.recipe.audio_args(plan.audio.as_ref().unwrap()));
    let ids: std::collections::BTreeSet<_> = work.iter().map(|w| w.attempt).collect();
    assert!(ids.len() == work.len() && ids.iter().all(|&i| i >= FIRST_ATTEMPT), "{ids:?}");

    // Nothing announced: the whole timeline, the first chunk with the job's own
    // seek, in chunks of at most 30 s; the audio track was had.
    let all = remaining(&plan, &std::collections::BTreeMap::new(), |_| false, true);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].args, plan.recipe.args(&chunk(0, 0.005, 24.0), true, true));
    // The last chunk announced: nothing is planned after it.
    announced.insert(3, Announced { start: 12.005, end: 24.0, last: true });
    let tail = remaining(&plan, &announced, |c| c != 3, true);
    assert_eq!(tail.iter().map(|w| (w.chunk, w.last)).collect::<Vec<_>>(), [(3, true)]);
}

#[test]
fn fmp4_segments_are_not_split_where_a_version_was_measured_to_differ() {
    let fmp4 = |seek: bool| {
        let mut a = jellyfin(if seek { &["-ss", "00:00:09.000"] } else { &[] }, "3");
        let at = a.iter().position(|x| x == "mpegts").unwrap();
        a[at] = "fmp4".into();
        a
    };
    let mut p = probe();
    p.lavc = Some("Lavc61.19.100".into());
    let err = plan_of(&fmp4(true), &p).unwrap_err();
    assert_eq!(err.code(), "nosplit.timeline", "{err}");
    // From the start, or on 5.1, it splits.
    assert!(plan_of(&fmp4(false), &p).is_ok());
    p.lavc = Some("Lavc59.37.100".into());
    assert!(plan_of(&fmp4(true), &p).is_ok());
    // On 8.x no fMP4 output is split; MPEG-TS segments are.
    p.lavc = Some("Lavc62.11.100".into());
    for seek in [false, true] {
        assert_eq!(plan_of(&fmp4(seek), &p).unwrap_err().code(), "nosplit.timeline");
    }
    assert!(plan_of(&jellyfin(&[], "3"), &p).is_ok());
}
