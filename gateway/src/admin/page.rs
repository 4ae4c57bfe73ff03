//! The status page's files, compiled into the binary (no CDN, no build step): one HTML
//! page, one script and one style sheet, which the admin listener's CSP lets load and
//! nothing else.

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");
const ICON: &str = include_str!("page/icon.svg");

/// The content type and body of the page's file at `path`, if it is one.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX.as_bytes())),
        "/ui/app.js" => Some(("text/javascript; charset=utf-8", SCRIPT.as_bytes())),
        "/ui/style.css" => Some(("text/css; charset=utf-8", STYLE.as_bytes())),
        // Browsers ask for an icon; without one, every page load logs a failed fetch.
        "/ui/icon.svg" | "/favicon.ico" => Some(("image/svg+xml", ICON.as_bytes())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_files_are_well_under_100_kib() {
        let total: usize = ["/", "/ui/app.js", "/ui/style.css", "/ui/icon.svg"]
            .iter()
            .map(|p| asset(p).map_or(0, |(_, b)| b.len()))
            .sum();
        assert!(total > 1000 && total < 100 * 1024, "{total} bytes");
    }

    #[test]
    fn the_page_names_only_its_own_files() {
        // The CSP allows 'self' only: a reference to another origin would be blocked.
        for (_, body) in ["/", "/ui/app.js", "/ui/style.css", "/ui/icon.svg"]
            .iter()
            .filter_map(|p| asset(p))
        {
            // The SVG namespace is a name, not a fetch.
            let text = std::str::from_utf8(body)
                .unwrap()
                .replace("http://www.w3.org/2000/svg", "");
            for needle in [
                "http://", "https://", "//cdn", "style=\"", "onclick", "onload",
            ] {
                assert!(!text.contains(needle), "{needle} in a page file");
            }
        }
    }
}
