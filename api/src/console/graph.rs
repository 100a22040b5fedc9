//! A run's jobs as an inline SVG graph: boxes placed by [`super::layout`], coloured by state
//! (and labelled with it), linked to each job's log, with the `needs` as curves between them.

use maud::{Markup, html};

use super::layout::{self, NODE_HEIGHT, NODE_WIDTH};
use crate::views::{JobView, short_duration};

/// The most characters of a job's name drawn in its box; the whole name is its tooltip.
const NAME_CHARS: usize = 26;

/// The graph of `jobs`, where `needs[i]` are the indices of the jobs job `i` needs.
pub fn draw(jobs: &[JobView], needs: &[Vec<usize>]) -> Markup {
    let layout = layout::layout(needs);
    let now = super::html::now_ms();
    html! {
        div.graph {
            svg xmlns="http://www.w3.org/2000/svg" role="group" aria-label="Jobs and what they need"
                width=(layout.width) height=(layout.height)
                viewBox={ "0 0 " (layout.width) " " (layout.height) } {
                g.edges aria-hidden="true" {
                    @for &(from, to) in &layout.edges {
                        @let (a, b) = (layout.places[from], layout.places[to]);
                        @let (x1, y1) = (a.x + NODE_WIDTH, a.y + NODE_HEIGHT / 2);
                        @let (x2, y2) = (b.x, b.y + NODE_HEIGHT / 2);
                        @let mid = (x1 + x2) / 2;
                        path d={ "M" (x1) " " (y1) "C" (mid) " " (y1) " " (mid) " " (y2) " " (x2) " " (y2) } {}
                    }
                }
                @for (job, place) in jobs.iter().zip(&layout.places) {
                    a href={ "/jobs/" (job.id) } id={ "node-" (job.id) } class={ "node state-" (job.state) } {
                        title { (job.name) ": " (job.state.replace('_', " ")) }
                        rect x=(place.x) y=(place.y) width=(NODE_WIDTH) height=(NODE_HEIGHT) rx="6" {}
                        text x=(place.x + 10) y=(place.y + 18) class="name" { (short_name(&job.name)) }
                        text x=(place.x + 10) y=(place.y + 35) class="meta" {
                            (job.state.replace('_', " "))
                            @match (job.started, job.finished) {
                                (Some(s), Some(f)) => { " · " (short_duration(f.millis() - s.millis())) }
                                (Some(s), None) => { " · " tspan data-since=(s.millis()) { (short_duration(now - s.millis())) } }
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A name cut to fit its box.
fn short_name(name: &str) -> String {
    match name.char_indices().nth(NAME_CHARS) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::Time;
    use hodei_domain::ids::Timestamp;

    fn job(id: u64, name: &str, state: &str) -> JobView {
        JobView {
            id,
            run: 1,
            name: name.into(),
            state: state.into(),
            reason: None,
            worker: None,
            needs: Vec::new(),
            attempt: 1,
            since: Time(Timestamp(0)),
            started: Some(Time(Timestamp(0))),
            finished: Some(Time(Timestamp(1_500))),
            steps: Vec::new(),
        }
    }

    #[test]
    fn the_graph_links_each_job_and_draws_each_need() {
        let jobs = [job(7, "build", "succeeded"), job(8, "<script>x", "running")];
        let svg = draw(&jobs, &[vec![], vec![0]]).0;
        assert!(svg.contains("href=\"/jobs/7\""), "{svg}");
        assert!(svg.contains("class=\"node state-running\""), "{svg}");
        assert_eq!(svg.matches("<path").count(), 1);
        assert!(svg.contains("&lt;script&gt;x"), "names are escaped: {svg}");
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("succeeded · 1.5s"), "{svg}");
    }

    #[test]
    fn long_names_are_cut() {
        assert_eq!(short_name("short"), "short");
        let long = "x".repeat(40);
        assert_eq!(short_name(&long).chars().count(), NAME_CHARS + 1);
    }
}
