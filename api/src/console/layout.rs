//! Where the jobs of a run go in its graph: a pure function of the jobs' `needs`.
//!
//! Layered left to right: a job's column is one more than the furthest column of the jobs it
//! needs (the longest path from a job that needs nothing), so every edge points right. Within
//! a column, jobs are ordered by the mean row of the jobs they need (one barycentre pass, in
//! column order), which keeps most edges short and uncrossed; ties keep plan order, so a
//! layout is stable from one refresh to the next.
//!
//! ## Guarantees
//! - Every edge goes from a lower column to a higher one; no two jobs share a cell.
//! - O(jobs + edges) apart from sorting each column.
//!
//! ## Assumptions
//! `needs` are indices of earlier-planned jobs or at least acyclic (a validated plan); an index
//! out of range is ignored.

/// Node and spacing sizes, in SVG user units.
pub const NODE_WIDTH: u32 = 200;
pub const NODE_HEIGHT: u32 = 44;
pub const COLUMN_GAP: u32 = 56;
pub const ROW_GAP: u32 = 14;
pub const MARGIN: u32 = 8;

/// A job's place: its column and row, and its top-left corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub column: usize,
    pub row: usize,
    pub x: u32,
    pub y: u32,
}

/// The places of every job (in plan order), the edges and the drawing's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub places: Vec<Place>,
    /// `(from, to)`: job `to` needs job `from`.
    pub edges: Vec<(usize, usize)>,
    pub width: u32,
    pub height: u32,
}

/// Lays out jobs whose `needs[i]` are the indices of the jobs job `i` needs.
pub fn layout(needs: &[Vec<usize>]) -> Layout {
    let n = needs.len();
    let edges: Vec<(usize, usize)> = needs
        .iter()
        .enumerate()
        .flat_map(|(to, from)| {
            from.iter()
                .filter(move |&&f| f < n && f != to)
                .map(move |&f| (f, to))
        })
        .collect();
    let columns = columns(needs);
    let depth = columns.iter().copied().max().map_or(0, |c| c + 1);
    let mut by_column: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (job, &column) in columns.iter().enumerate() {
        by_column[column].push(job);
    }
    let mut rows = vec![0usize; n];
    for jobs in &mut by_column {
        // The mean row of the jobs needed (in earlier columns, already placed), plan order
        // for ties and for jobs that need nothing.
        let key = |job: usize| -> (u64, usize) {
            let parents: Vec<usize> = needs[job].iter().copied().filter(|&p| p < n).collect();
            match parents.len() {
                0 => (0, job),
                len => {
                    let sum: usize = parents.iter().map(|&p| rows[p]).sum();
                    ((sum as u64 * 1024) / len as u64, job)
                }
            }
        };
        let mut keyed: Vec<((u64, usize), usize)> = jobs.iter().map(|&j| (key(j), j)).collect();
        keyed.sort_unstable();
        for (row, (_, job)) in keyed.into_iter().enumerate() {
            rows[job] = row;
        }
    }
    let tallest = by_column.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let places = (0..n)
        .map(|job| Place {
            column: columns[job],
            row: rows[job],
            x: MARGIN + columns[job] as u32 * (NODE_WIDTH + COLUMN_GAP),
            y: MARGIN + rows[job] as u32 * (NODE_HEIGHT + ROW_GAP),
        })
        .collect();
    Layout {
        places,
        edges,
        width: 2 * MARGIN + (depth as u32).saturating_mul(NODE_WIDTH + COLUMN_GAP)
            - if depth > 0 { COLUMN_GAP } else { 0 },
        height: 2 * MARGIN + tallest.saturating_mul(NODE_HEIGHT + ROW_GAP)
            - if tallest > 0 { ROW_GAP } else { 0 },
    }
}

/// Each job's column: the length of the longest chain of `needs` behind it. Iterative, so that
/// a chain of thousands of jobs cannot overflow the stack; a cycle (which validation refuses)
/// is cut where it closes.
fn columns(needs: &[Vec<usize>]) -> Vec<usize> {
    const UNSEEN: usize = usize::MAX;
    const VISITING: usize = usize::MAX - 1;
    let n = needs.len();
    let mut column = vec![UNSEEN; n];
    for root in 0..n {
        if column[root] != UNSEEN {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        column[root] = VISITING;
        while let Some(&mut (job, ref mut next)) = stack.last_mut() {
            let parents = &needs[job];
            if *next < parents.len() {
                let parent = parents[*next];
                *next += 1;
                if parent < n && column[parent] == UNSEEN {
                    column[parent] = VISITING;
                    stack.push((parent, 0));
                }
                continue;
            }
            column[job] = parents
                .iter()
                .filter(|&&p| p < n && column[p] < VISITING)
                .map(|&p| column[p] + 1)
                .max()
                .unwrap_or(0);
            stack.pop();
        }
    }
    column
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diamond_is_three_columns_with_the_middle_two_stacked() {
        // build -> (test, lint) -> deploy
        let layout = layout(&[vec![], vec![0], vec![0], vec![1, 2]]);
        let columns: Vec<usize> = layout.places.iter().map(|p| p.column).collect();
        assert_eq!(columns, [0, 1, 1, 2]);
        assert_eq!(layout.places[1].row, 0);
        assert_eq!(layout.places[2].row, 1);
        assert_eq!(layout.edges, [(0, 1), (0, 2), (1, 3), (2, 3)]);
        assert_eq!(layout.width, 2 * MARGIN + 3 * NODE_WIDTH + 2 * COLUMN_GAP);
        assert_eq!(layout.height, 2 * MARGIN + 2 * NODE_HEIGHT + ROW_GAP);
    }

    #[test]
    fn a_job_sits_right_of_its_longest_chain() {
        // 3 needs 0 directly and through 1 -> 2.
        let layout = layout(&[vec![], vec![0], vec![1], vec![0, 2]]);
        assert_eq!(layout.places[3].column, 3);
    }

    #[test]
    fn rows_follow_the_jobs_needed_to_keep_edges_uncrossed() {
        // a, b in column 0; b2 needs b, a2 needs a, listed b2 first.
        let layout = layout(&[vec![], vec![], vec![1], vec![0]]);
        assert_eq!(layout.places[3].row, 0, "a2 beside a");
        assert_eq!(layout.places[2].row, 1, "b2 beside b");
    }

    #[test]
    fn every_edge_points_right_and_no_cell_is_shared() {
        // A wide, deep graph: 500 jobs, each needing up to three earlier ones.
        let needs: Vec<Vec<usize>> = (0..500)
            .map(|i: usize| {
                [i / 2, i / 3, i.saturating_sub(7)]
                    .into_iter()
                    .filter(|&p| p < i)
                    .collect()
            })
            .collect();
        let layout = layout(&needs);
        for &(from, to) in &layout.edges {
            assert!(layout.places[from].column < layout.places[to].column);
        }
        let mut cells: Vec<(usize, usize)> =
            layout.places.iter().map(|p| (p.column, p.row)).collect();
        cells.sort_unstable();
        cells.dedup();
        assert_eq!(cells.len(), 500);
        for place in &layout.places {
            assert!(place.x + NODE_WIDTH <= layout.width);
            assert!(place.y + NODE_HEIGHT <= layout.height);
        }
    }

    #[test]
    fn a_long_chain_and_bad_input_do_not_break_it() {
        let chain: Vec<Vec<usize>> = (0..10_000)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        assert_eq!(layout(&chain).places[9_999].column, 9_999);
        let odd = layout(&[vec![1], vec![0], vec![7, 2]]);
        assert_eq!(odd.places.len(), 3);
        assert!(odd.edges.iter().all(|&(f, t)| f < 3 && t < 3 && f != t));
        assert_eq!(layout(&[]).width, 2 * MARGIN);
    }
}
