//! Expansion of SLURM's compressed host lists and task counts.
//!
//! SLURM writes `SLURM_JOB_NODELIST=gnode[10,20-22],login1` and
//! `SLURM_TASKS_PER_NODE=2(x3),1`; see srun(1), "OUTPUT ENVIRONMENT VARIABLES"
//! (`SchedMD/slurm doc/man/man1/srun.1`). Zero padding in ranges is kept
//! (`node[001-003]` gives `node001`, `node002`, `node003`).

use crate::error::{Error, Result};

/// The most hosts one list may expand to; a guard against `n[0-999999999]`.
const MAX_HOSTS: usize = 1 << 20;

/// Expands a compressed SLURM host list into host names, in order.
///
/// ```
/// let hosts = shoal_dist::expand_hostlist("gpu[01-03,7],login").unwrap();
/// assert_eq!(hosts, ["gpu01", "gpu02", "gpu03", "gpu7", "login"]);
/// ```
pub fn expand_hostlist(list: &str) -> Result<Vec<String>> {
    let err = |detail: &str| Error::HostList {
        list: list.to_string(),
        detail: detail.to_string(),
    };
    let mut hosts = Vec::new();
    for item in split_top_level(list).map_err(|d| err(&d))? {
        if item.is_empty() {
            return Err(err("empty host name"));
        }
        expand_item(item, &mut hosts).map_err(|d| err(&d))?;
        if hosts.len() > MAX_HOSTS {
            return Err(err("expands to more than 2^20 hosts"));
        }
    }
    if hosts.is_empty() {
        return Err(err("no hosts"));
    }
    Ok(hosts)
}

/// Splits at commas that are not inside brackets.
fn split_top_level(list: &str) -> std::result::Result<Vec<&str>, String> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1).ok_or("unbalanced ']'")?,
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '['".into());
    }
    items.push(&list[start..]);
    Ok(items)
}

/// Expands one item, which may hold several bracket groups (`r[1-2]n[3-4]`).
fn expand_item(item: &str, out: &mut Vec<String>) -> std::result::Result<(), String> {
    let Some(open) = item.find('[') else {
        out.push(item.to_string());
        return Ok(());
    };
    let close = item[open..].find(']').ok_or("unbalanced '['")? + open;
    let (prefix, ranges, rest) = (&item[..open], &item[open + 1..close], &item[close + 1..]);
    let mut tails = Vec::new();
    expand_item(if rest.is_empty() { "" } else { rest }, &mut tails)?;
    for range in ranges.split(',') {
        let (lo, hi) = match range.split_once('-') {
            Some((lo, hi)) => (lo, hi),
            None => (range, range),
        };
        let width = lo.len();
        let parse = |s: &str| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                Err(format!("{range:?} is not a number or a range of numbers"))
            } else {
                s.parse::<u64>().map_err(|e| format!("{range:?}: {e}"))
            }
        };
        let (lo_n, hi_n) = (parse(lo)?, parse(hi)?);
        if hi_n < lo_n {
            return Err(format!("range {range:?} runs backwards"));
        }
        if (hi_n - lo_n) as usize > MAX_HOSTS {
            return Err(format!("range {range:?} is too large"));
        }
        for n in lo_n..=hi_n {
            for tail in &tails {
                out.push(format!("{prefix}{n:0width$}{tail}"));
            }
        }
    }
    Ok(())
}

/// Expands `SLURM_TASKS_PER_NODE` (`2(x3),1`) into one task count per node.
///
/// ```
/// assert_eq!(shoal_dist::expand_tasks_per_node("2(x3),1").unwrap(), [2, 2, 2, 1]);
/// ```
pub fn expand_tasks_per_node(spec: &str) -> Result<Vec<usize>> {
    let err = |detail: String| Error::HostList {
        list: spec.to_string(),
        detail,
    };
    let mut counts = Vec::new();
    for part in spec.split(',') {
        let (count, repeat) = match part.split_once("(x") {
            Some((c, r)) => {
                let r = r
                    .strip_suffix(')')
                    .ok_or_else(|| err(format!("{part:?} lacks ')'")))?;
                (c, r)
            }
            None => (part, "1"),
        };
        let count: usize = count
            .parse()
            .map_err(|_| err(format!("{part:?}: task count is not a number")))?;
        let repeat: usize = repeat
            .parse()
            .map_err(|_| err(format!("{part:?}: repeat is not a number")))?;
        if counts.len() + repeat > MAX_HOSTS {
            return Err(err("too many nodes".into()));
        }
        counts.extend(std::iter::repeat_n(count, repeat));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn expands_the_man_page_forms() {
        assert_eq!(
            expand_hostlist("gnode[10,20,25,37]").unwrap(),
            ["gnode10", "gnode20", "gnode25", "gnode37"]
        );
        assert_eq!(
            expand_hostlist("dev[7-10]").unwrap(),
            ["dev7", "dev8", "dev9", "dev10"]
        );
        assert_eq!(
            expand_hostlist("node[001-003]").unwrap(),
            ["node001", "node002", "node003"]
        );
        assert_eq!(expand_hostlist("a,b[1-2],c").unwrap(), ["a", "b1", "b2", "c"]);
        assert_eq!(
            expand_hostlist("r[1-2]n[3-4]").unwrap(),
            ["r1n3", "r1n4", "r2n3", "r2n4"]
        );
    }

    #[test]
    fn rejects_malformed_lists() {
        for bad in ["", "a[1-2", "a]", "a[x]", "a[3-1]", "a,,b", "a[0-99999999999]"] {
            assert!(expand_hostlist(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn tasks_per_node() {
        assert_eq!(expand_tasks_per_node("4").unwrap(), [4]);
        assert_eq!(expand_tasks_per_node("2(x2),1,3(x1)").unwrap(), [2, 2, 1, 3]);
        assert!(expand_tasks_per_node("2(x").is_err());
        assert!(expand_tasks_per_node("x").is_err());
    }

    proptest! {
        #[test]
        fn ranges_round_trip(prefix in "[a-z]{1,6}", lo in 0u32..500, len in 0u32..50, width in 1usize..5) {
            let hi = lo + len;
            let list = format!("{prefix}[{lo:0width$}-{hi:0width$}]");
            let hosts = expand_hostlist(&list).unwrap();
            prop_assert_eq!(hosts.len() as u32, len + 1);
            for (i, h) in hosts.iter().enumerate() {
                prop_assert_eq!(h, &format!("{prefix}{:0width$}", lo + i as u32));
            }
        }
    }
}
