//! Just enough of ffmpeg's filtergraph syntax (`libavfilter/graphparser.c`) to name
//! the filters a graph uses: chains are separated by `;`, filters by `,`, link
//! labels are `[…]`, a filter instance is `name[@id][=args]`, and `\` escapes and
//! `'…'` quotes protect separators inside arguments.

/// Names of the filters used in `graph`, in order of appearance (duplicates kept out).
pub fn filter_names(graph: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for filter in split_top_level(graph) {
        let mut rest = filter.trim_start();
        // Leading input labels.
        while let Some(stripped) = rest.strip_prefix('[') {
            rest = stripped.split_once(']').map_or("", |(_, r)| r).trim_start();
        }
        let end = rest.find(['=', '@', '[', ' ', '\t', '\n']).unwrap_or(rest.len());
        let name = &rest[..end];
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    names
}

/// `graph` with every filter named `from` renamed to `to` (arguments, labels and
/// instance names kept), or `None` when no filter is named `from`. Used by node
/// argument translations (`scale_qsv` run as `scale_vaapi`).
pub fn rename_filter(graph: &str, from: &str, to: &str) -> Option<String> {
    let mut out = String::with_capacity(graph.len());
    let mut done = 0;
    let mut hit = false;
    for filter in split_top_level(graph) {
        // Byte offset of this description inside `graph` (it is a subslice).
        let start = filter.as_ptr() as usize - graph.as_ptr() as usize;
        let mut rest = filter.trim_start();
        while let Some(stripped) = rest.strip_prefix('[') {
            rest = stripped.split_once(']').map_or("", |(_, r)| r).trim_start();
        }
        let at = start + (filter.len() - rest.len());
        let end = rest.find(['=', '@', '[', ' ', '\t', '\n']).unwrap_or(rest.len());
        if &rest[..end] == from {
            out.push_str(&graph[done..at]);
            out.push_str(to);
            done = at + end;
            hit = true;
        }
    }
    out.push_str(&graph[done..]);
    hit.then_some(out)
}

/// Splits a graph into filter descriptions at `,` and `;` outside quotes and escapes.
fn split_top_level(graph: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in graph.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '\'' => quoted = !quoted,
            ',' | ';' if !quoted => {
                parts.push(&graph[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&graph[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::{filter_names, rename_filter};

    #[test]
    fn renames_filters_only_where_they_are_named() {
        let g = "[0:v]scale_qsv=w=1280:h=720,format=nv12[v];[v]scale_qsv@x,drawtext=text='scale_qsv'";
        assert_eq!(
            rename_filter(g, "scale_qsv", "scale_vaapi").as_deref(),
            Some("[0:v]scale_vaapi=w=1280:h=720,format=nv12[v];[v]scale_vaapi@x,drawtext=text='scale_qsv'")
        );
        assert_eq!(rename_filter("scale=1:2", "scale_qsv", "x"), None);
        assert_eq!(rename_filter("scale", "scale", "scale_vaapi").as_deref(), Some("scale_vaapi"));
    }

    #[test]
    fn jellyfin_software_chain() {
        let g = r"setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709,scale=trunc(min(max(iw\,ih*a)\,min(1920\,1080*a))/2)*2:trunc(min(max(iw/a\,ih)\,min(1920/a\,1080))/2)*2,format=yuv420p";
        assert_eq!(filter_names(g), ["setparams", "scale", "format"]);
    }

    #[test]
    fn labels_quotes_and_instances() {
        let g = "[0:3]scale,scale=-1:1080:fast_bilinear,crop,pad=max(1920\\,iw):max(1080\\,ih):(ow-iw)/2:(oh-ih)/2:black@0,crop=1920:1080[sub];[0:0]setparams=color_primaries=bt709,scale=1920:1080[main];[main][sub]overlay=eof_action=pass:repeatlast=0";
        assert_eq!(filter_names(g), ["scale", "crop", "pad", "setparams", "overlay"]);
        assert_eq!(filter_names("subtitles=f='/a,b.srt':fontsdir='/f',format=yuv420p"), ["subtitles", "format"]);
        assert_eq!(filter_names("yadif@deint=0:-1:0"), ["yadif"]);
        assert_eq!(filter_names("pan=stereo|c0=c0+c2|c1=c1+c2,volume=2"), ["pan", "volume"]);
    }
}
